"""Metrics, registered in `METRICS`: overlap and surface distances (segmentation.py), translation fidelity (fidelity.py)."""
