"""The PDN's size names and descriptor width, apart from the networks so that the params schema
(methods/efficientad/config.py) reads them without importing torch."""

from __future__ import annotations

from typing import Literal

ModelSize = Literal["small", "medium"]
TEACHER_CHANNELS = 384  # the student has twice as many: teacher-imitating half + AE-imitating half
