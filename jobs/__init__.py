"""Batch jobs that run beside the services (catalogue ingestion and re-embedding)."""
