"""Translation fidelity metrics in target units (HU): MAE, PSNR, SSIM inside the body."""
