"""The gateway service: what e-commerce backends call (python -m services.gateway)."""
