"""Metrics, registered in `METRICS`: overlap and surface distances (segmentation.py), fidelity (fidelity.py)."""
