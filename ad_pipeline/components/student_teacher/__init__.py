"""Student–teacher networks shared by EfficientAD, CSAD's LGST and PUAD.

Modules: ``pdn`` (PDN small/medium), ``autoencoder``, ``maps`` (raw maps, map quantiles,
normalisation, combination), ``train`` (teacher statistics, student/AE loop), ``model`` (the
EfficientAD inference module), ``data`` (images, generic penalty images, augmentations).
"""
