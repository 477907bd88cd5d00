"""Catalogue ingestion: keeps the vector store in step with a product manifest, incrementally and resumably.

Run as ``python -m jobs.indexer --help``.  The pieces:

- ``manifest``: streams rows from the dataset's styles.csv or a generic CSV/JSONL manifest;
- ``fetch``: reads image bytes from files or http(s) URLs;
- ``digest``: the per-item content hash and the compact map of what the store already holds;
- ``targets``: where items go: through the gateway (Qdrant Edge, single writer) or straight to a store
  (Qdrant server, or a new Edge collection) with the embedder/classifier services;
- ``runner``: the streaming, batched pipeline, the reject file, the progress line and the summary.
"""
