"""da_seg plugin: cardiac MR -> CT label transfer (six structures), with a thorax phantom."""
