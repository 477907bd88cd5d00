"""Detector service: finds the products in a photo (box, group, score). Run with `python -m services.detector`."""
