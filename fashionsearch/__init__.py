"""fashionsearch: the small package that every service, job and the training evaluation share."""
