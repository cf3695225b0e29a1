"""Student–teacher networks shared by EfficientAD, CSAD's LGST and PUAD.

Modules: ``pdn`` (PDN small/medium), ``autoencoder``, ``model`` (the ``StudentTeacher`` base,
``EfficientADModel``), ``maps`` (raw maps, map quantiles, normalisation, combination),
``train`` (teacher statistics, student/AE loop), ``checkpoint`` (EfficientAD's saved model),
``data`` (images, generic penalty images, augmentations).
"""
