"""Augmentations built on kornia.augmentation, registered in `AUGMENTATIONS`."""
