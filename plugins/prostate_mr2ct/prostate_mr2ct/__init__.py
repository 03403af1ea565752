"""Reference da_seg plugin: prostate MR -> CT (Chen et al., the seed paper), with a pelvic phantom."""
