"""Segmentation metrics in millimetres: Dice, HD95, ASSD, relative volume difference."""
