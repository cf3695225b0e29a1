"""EfficientAD (Batzner et al., WACV 2024): PDN teacher/student + autoencoder.

Modules: ``distill`` (teacher distillation), ``teacher_files`` (teacher files: load, save,
weights_dir or distil), ``method`` (the AnomalyMethod), ``inference`` (the export graph). The
networks, maps, training loop and saved model are shared: ``ad_pipeline.components.student_teacher``.
"""

from ad_pipeline.components.student_teacher.model import EfficientADModel
from ad_pipeline.methods.efficientad.distill import TeacherConfig, TeacherState, distill_teacher
from ad_pipeline.methods.efficientad.method import EfficientAD, EfficientADConfig
from ad_pipeline.methods.efficientad.teacher_files import load_teacher, obtain_teacher, save_teacher

__all__ = ["EfficientAD", "EfficientADConfig", "EfficientADModel", "TeacherConfig", "TeacherState",
           "distill_teacher", "load_teacher", "obtain_teacher", "save_teacher"]
