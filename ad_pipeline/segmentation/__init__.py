"""Component segmentation shared by CSAD and PSAD: mask proposers, pseudo-labels, segmentors,
losses and the training loop."""
