"""Segmenters, registered in `SEGMENTERS`: the 2.5D Res-U-Net and an adapter over segmentation_models_pytorch."""
