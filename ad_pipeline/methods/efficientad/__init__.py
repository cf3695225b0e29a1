"""EfficientAD (Batzner et al., WACV 2024): PDN teacher/student + autoencoder.

Modules: ``pdn`` (PDN small/medium), ``autoencoder``, ``teacher`` (distillation target,
distillation loop, teacher files), ``train`` (student/AE loop), ``maps`` (map normalisation
and combination), ``model`` (the inference module), ``data`` (images and augmentations),
``method`` (the AnomalyMethod).
"""

from ad_pipeline.components.student_teacher.model import EfficientADModel
from ad_pipeline.methods.efficientad.distill import (TeacherConfig, TeacherState, distill_teacher, load_teacher,
                                                     obtain_teacher, save_teacher)
from ad_pipeline.methods.efficientad.method import EfficientAD, EfficientADConfig, load_model

__all__ = ["EfficientAD", "EfficientADConfig", "EfficientADModel", "TeacherConfig", "TeacherState",
           "distill_teacher", "load_model", "load_teacher", "obtain_teacher", "save_teacher"]
