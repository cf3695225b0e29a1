"""The manifest: the ordered list of samples of one dataset category.

Every score dump follows manifest order; its fingerprint is stored beside the dump and
checked on load, so a stale or reordered dump is an error, never a silent mismatch. The
manifest is content-addressed: ``digests`` holds the sha256 of every file of the category
and a split's fingerprint covers its images' bytes, so replacing an image under the same
name changes the manifest (DVC re-runs what depends on it) and makes old dumps stale.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from ad_pipeline.errors import ArtifactError
from ad_pipeline.io import read_json, sha256_of, write_json

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Sample:
    """One image. Paths are POSIX, relative to the dataset root.

    ``split``: train | validation | test. ``label``: 0 good, 1 anomalous. ``defect_type``:
    the test folder name (``good``, ``broken_large``, ``logical_anomalies`` …).
    ``mask_paths``: ground-truth files ((), for good images; several for LOCO channels).
    ``holdout``: True for a validation image held out of train/good (datasets without a
    validation folder).
    """

    path: str
    split: str
    label: int
    defect_type: str
    mask_paths: tuple[str, ...] = ()
    holdout: bool = False

    @property
    def stem(self) -> str:
        return Path(self.path).stem


@dataclass
class Manifest:
    dataset: str
    format: str
    category: str
    root: Path
    samples: list[Sample] = field(default_factory=list)
    extras: dict = field(default_factory=dict)  # format specific, e.g. LOCO defects_config path
    digests: dict[str, str] = field(default_factory=dict)  # path relative to root → sha256 of the file

    def split(self, name: str) -> list[Sample]:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        return [s for s in self.samples if s.split == name]

    def paths(self, split: str) -> list[Path]:
        return [self.root / s.path for s in self.split(split)]

    def labels(self, split: str) -> list[int]:
        return [s.label for s in self.split(split)]

    def fingerprint(self, split: str) -> str:
        """Hash of the ordered (path, label, defect type, image sha256) rows of one split."""
        return sha256_of([f"{s.path}|{s.label}|{s.defect_type}|{self.digests.get(s.path, '')}"
                          for s in self.split(split)])

    def mask_digests(self) -> dict[str, str]:
        """sha256 of the ground-truth files (only scoring reads them; see :meth:`to_json`)."""
        return {m: self.digests[m] for s in self.samples for m in s.mask_paths if m in self.digests}

    def to_json(self) -> dict:
        """Everything but the mask digests: prepare writes those apart (``mask_digests``), so that
        a changed mask re-runs the evaluation, not the methods that never read masks."""
        masks = self.mask_digests()
        return {
            "dataset": self.dataset,
            "format": self.format,
            "category": self.category,
            "root": str(self.root),
            "extras": self.extras,
            "counts": {sp: len(self.split(sp)) for sp in SPLITS},
            "samples": [asdict(s) | {"mask_paths": list(s.mask_paths)} for s in self.samples],
            "digests": {k: v for k, v in self.digests.items() if k not in masks},
        }

    @classmethod
    def from_json(cls, obj: dict) -> Manifest:
        samples = [Sample(**(s | {"mask_paths": tuple(s["mask_paths"])})) for s in obj["samples"]]
        return cls(obj["dataset"], obj["format"], obj["category"], Path(obj["root"]), samples, obj.get("extras", {}),
                   obj["digests"])

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        obj = read_json(path)
        try:
            return cls.from_json(obj)
        except (KeyError, TypeError) as e:
            raise ArtifactError(f"not a manifest ({e})", path=path, fix="re-run prepare@<dataset>") from None
