"""Catalogue backups: ``python -m jobs.backup create|restore|list`` (see its --help and README.md).

The format and the consistent copy live in ``fashionsearch.store.backup`` (the gateway writes backups with it too);
this package is the command line: which store, which backup, and the blue/green switch after a restore.
"""
