"""Classifier service: predicts catalogue attributes of an apparel photo. Run with `python -m services.classifier`."""
