"""Reference da_seg plugin: prostate MR -> CT, the task of "Cross-modality knowledge transfer for prostate segmentation
from CT scans", with a pelvic phantom."""
