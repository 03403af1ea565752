"""Translators (source -> target domain), registered in `TRANSLATORS`."""
