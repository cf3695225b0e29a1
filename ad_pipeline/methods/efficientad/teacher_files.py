"""EfficientAD teacher files: the ``efficientad_teacher`` stage's output and the reference teachers.

``teacher_small.pth`` / ``teacher_medium.pth`` (in ``weights_dir`` or a teacher stage's output
directory) is a plain torch state dict of the PDN with integer keys ("0.weight", "0.bias",
"3.weight", …), the layout of the public reference teachers (nelson1425/EfficientAD
``models/teacher_*.pth``); ``teacher.json`` beside it (written by :func:`save_teacher`)
records how it was obtained. :func:`obtain_teacher` resolves a file or distils a new teacher.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ad_pipeline.components.student_teacher.data import resolve_pretrain_images
from ad_pipeline.components.student_teacher.pdn import TEACHER_CHANNELS, PDN, ModelSize
from ad_pipeline.errors import UserError
from ad_pipeline.io import atomic_path, read_json, write_json
from ad_pipeline.methods.base import RunContext
from ad_pipeline.methods.efficientad.config import TeacherConfig
from ad_pipeline.methods.efficientad.distill import TeacherState, distill_teacher


def teacher_file_name(size: ModelSize) -> str:
    return f"teacher_{size}.pth"


def load_teacher_file(path: Path, size: ModelSize, channels: int = TEACHER_CHANNELS, width_divisor: int = 1) -> PDN:
    """A teacher state dict file → PDN(size, channels, padding=False); UserError for a wrong file."""
    if not path.is_file():
        raise UserError("teacher checkpoint not found", path=path,
                        fix=f"place {teacher_file_name(size)} there (a PDN state dict) or run the efficientad_teacher stage")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        pdn = PDN(size, channels, padding=False, width_divisor=width_divisor)
        pdn.load_state_dict(state)
    except Exception as e:  # noqa: BLE001 — any unpickling / key / shape problem is a bad file
        raise UserError(f"not a PDN-{size} teacher state dict ({type(e).__name__}: {str(e)[:200]})", path=path,
                        fix=f"provide a torch state dict of a PDN-{size} with {channels} output channels") from None
    return pdn.eval()


def obtain_teacher(cfg: TeacherConfig, ctx: RunContext, fallback_images: Sequence[Path]) -> TeacherState:
    """The stage's entry point: load ``weights_dir/teacher_<size>.pth`` or distil a new teacher.

    ``fallback_images`` are used when ``cfg.pretrain_images`` is null (recorded in meta).
    """
    file = Path(ctx.weights_dir) / teacher_file_name(cfg.model_size) if ctx.weights_dir else None
    if cfg.source == "file" or (cfg.source == "auto" and file is not None and file.is_file()):
        if file is None:
            raise UserError("teacher source is 'file' but no weights_dir is set",
                            fix=f"set weights_dir to the folder holding {teacher_file_name(cfg.model_size)}")
        return TeacherState(load_teacher_file(file, cfg.model_size, cfg.channels, cfg.width_divisor), cfg.model_size,
                            {"source": "file", "file": str(file), "channels": cfg.channels,
                             "width_divisor": cfg.width_divisor})
    images, fallback = resolve_pretrain_images(cfg.pretrain_images, fallback_images)
    state = distill_teacher(images, cfg, ctx)
    state.meta["pretrain_images_fallback"] = fallback
    return state


def save_teacher(state: TeacherState, out_dir: Path) -> Path:
    """Write ``teacher_<size>.pth`` (state dict) and ``teacher.json``; return the .pth path."""
    out_dir = Path(out_dir)
    path = out_dir / teacher_file_name(state.size)
    with atomic_path(path) as tmp:
        torch.save(state.pdn.state_dict(), tmp)
    write_json(out_dir / "teacher.json", {"model_size": state.size} | state.meta)
    return path


def load_teacher(teacher_dir: Path, size: ModelSize) -> TeacherState:
    """Read a teacher directory written by :func:`save_teacher` (or holding a reference file)."""
    teacher_dir = Path(teacher_dir)
    meta_path = teacher_dir / "teacher.json"
    meta = read_json(meta_path) if meta_path.exists() else {"source": "file"}
    pdn = load_teacher_file(teacher_dir / teacher_file_name(size), size, meta.get("channels", TEACHER_CHANNELS),
                            meta.get("width_divisor", 1))
    return TeacherState(pdn, size, meta)
