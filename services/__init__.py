"""The three gRPC services, each run as `python -m services.<name>`."""
