"""Embedder service: turns an apparel photo into a search vector. Run with `python -m services.embedder`."""
