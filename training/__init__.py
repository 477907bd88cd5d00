"""Training, export and evaluation of the fashionsearch models (`python -m training --help`)."""
