"""EfficientAD (Batzner et al., WACV 2024): PDN teacher/student + autoencoder.

Modules: ``distill`` (teacher distillation), ``teacher_files`` (teacher files: load, save,
weights_dir or distil), ``method`` (the AnomalyMethod), ``inference`` (the export graph). The
networks, maps, training loop and saved model are shared: ``ad_pipeline.components.student_teacher``.
``config`` holds ``TeacherConfig`` for the params schema; nothing is re-exported here, so that
importing it imports no model code.
"""
