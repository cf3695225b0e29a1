"""Component segmentation shared by CSAD and PSAD: mask proposers, pseudo-labels, segmentors,
losses and the training loop; ``config`` holds the settings params.yaml gives them."""
