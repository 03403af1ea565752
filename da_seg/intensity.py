"""Intensity presets (CT window, MR percentile normalisation), registered in `INTENSITIES`."""
