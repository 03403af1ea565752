"""An example da_seg plugin: one segmenter and one augmentation."""
