"""Artifact I/O: atomic writes, score/map dumps checked against the manifest, meta.json.

Every write goes to a temporary sibling and is renamed into place, so an interrupted stage
never leaves a half-written file (or directory) that a later stage could read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ad_pipeline.errors import ArtifactError


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; rename it onto ``final`` if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary directory; on success it replaces ``final`` as a whole.

    Used for DVC directory outputs: either the complete new directory is there or the old
    one (if any) is left untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            trash = final.with_name(f".{final.name}.old")
            shutil.rmtree(trash, ignore_errors=True)
            os.replace(final, trash)
            os.replace(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError("file not found", path=path, fix="run the stage that produces it") from None
    except json.JSONDecodeError as e:
        raise ArtifactError(f"not valid JSON ({e})", path=path, fix="re-run the stage that wrote it") from None


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def save_npy(path: str | Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes (read in chunks)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def sha256_of(items: list[str]) -> str:
    h = hashlib.sha256()
    for it in items:
        h.update(it.encode())
        h.update(b"\n")
    return h.hexdigest()


def _non_finite(what: str, values: np.ndarray, path: Path, writer: str | None, fix: str) -> None:
    """ArtifactError naming the file, the stage that wrote it and the first bad rows, if any value
    of ``values`` ([N] or [N,h,w]) is NaN/inf."""
    finite = np.isfinite(values).reshape(len(values), -1).all(axis=1)
    if not finite.all():
        rows = np.flatnonzero(~finite)
        raise ArtifactError(f"{what} hold NaN/inf in {len(rows)} row(s) (first: {rows[:5].tolist()}); "
                            f"written by {writer or 'an unknown stage'}", path=path, fix=fix)


MAP_DTYPES = ("float16", "float32")


def write_scores(out_dir: str | Path, split: str, fingerprint: str, scores: np.ndarray, maps: np.ndarray | None,
                 *, writer: str | None = None, map_dtype: str = "float16") -> None:
    """Write ``<split>_scores.npy`` (float32 [N]), ``<split>_maps.npy`` ([N,h,w] in ``map_dtype``:
    float16 divided by the power-of-two ``map_scale`` recorded in the index when needed, or float32
    as is, for methods compared against float32 reference maps) and ``<split>_index.json``
    recording the manifest fingerprint the rows follow, ``writer`` (the stage, e.g.
    ``patchcore@mvtec_ad``) and the map dtype. NaN/inf scores or maps are an ArtifactError:
    nothing is written."""
    if map_dtype not in MAP_DTYPES:
        raise ValueError(f"map_dtype must be one of {MAP_DTYPES}, got {map_dtype!r}")
    scores = np.asarray(scores, dtype=np.float32)
    if scores.ndim != 1:
        raise ValueError(f"scores must be 1-D [N], got shape {scores.shape}")
    out_dir = Path(out_dir)
    fix = (f"{writer or 'the method'} diverged or read broken inputs: check its params (e.g. learning rate, "
           "steps) and the images of these rows, then re-run it")
    _non_finite(f"{split} scores", scores, out_dir / f"{split}_scores.npy", writer, fix)
    if maps is not None:
        maps = np.asarray(maps)
        if maps.ndim != 3 or maps.shape[0] != scores.shape[0]:
            raise ValueError(f"maps must be [N,h,w] with N={scores.shape[0]}, got {maps.shape}")
        _non_finite(f"{split} maps", maps, out_dir / f"{split}_maps.npy", writer, fix)
    index = {"split": split, "n": int(scores.shape[0]), "fingerprint": fingerprint, "writer": writer,
             "map_shape": None, "map_scale": 1.0, "map_dtype": None}
    save_npy(out_dir / f"{split}_scores.npy", scores)
    if maps is not None:
        scale = float16_scale(maps) if map_dtype == "float16" else 1.0
        save_npy(out_dir / f"{split}_maps.npy", (maps / scale).astype(map_dtype))
        index["map_shape"] = list(maps.shape[1:])
        index["map_scale"] = scale
        index["map_dtype"] = map_dtype
    write_json(out_dir / f"{split}_index.json", index)


def float16_scale(maps: np.ndarray) -> float:
    """Power of two that brings ``maps`` into float16 range (1.0 when it already fits).

    Dividing by a power of two is exact, so stored maps keep float16's relative precision
    whatever their magnitude (e.g. PatchCore's squared distances can exceed 65504)."""
    peak = float(np.abs(maps).max(initial=0.0))
    limit = 2.0**14  # headroom below float16's max (65504)
    return float(2.0 ** np.ceil(np.log2(peak / limit))) if peak > limit else 1.0


def read_scores(dump_dir: str | Path, split: str, fingerprint: str, *, with_maps: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a dump written by :func:`write_scores`, checking it belongs to the current manifest.

    Raises ArtifactError if the dump is missing, was written for another (stale or reordered)
    manifest (the manifest fingerprint covers the images' bytes), its arrays disagree with the
    index, or hold NaN/inf (naming the file and the stage that wrote it).
    """
    dump_dir = Path(dump_dir)
    index_path = dump_dir / f"{split}_index.json"
    if not index_path.exists():
        raise ArtifactError(f"no {split} score dump here", path=dump_dir, fix="run the method's stage first (dvc repro)")
    index = read_json(index_path)
    if index.get("fingerprint") != fingerprint:
        raise ArtifactError(
            f"{split} dump was written for another manifest (stale or reordered samples)",
            path=dump_dir,
            fix="re-run the method's stage so its dumps follow the current manifest",
        )
    scores = np.load(dump_dir / f"{split}_scores.npy", allow_pickle=False)
    maps = None
    if with_maps and index.get("map_shape") is not None:
        maps = np.load(dump_dir / f"{split}_maps.npy", allow_pickle=False, mmap_mode="r")
        if index.get("map_scale", 1.0) != 1.0:
            maps = maps.astype(np.float32) * np.float32(index["map_scale"])
    if scores.shape[0] != index["n"] or (maps is not None and maps.shape[0] != index["n"]):
        raise ArtifactError(f"{split} dump arrays do not match its index ({index['n']} rows)", path=dump_dir,
                            fix="re-run the method's stage")
    writer = index.get("writer")
    fix = f"re-run it (`dvc repro -f {writer}`) after fixing its cause" if writer else "re-run the method's stage"
    _non_finite(f"{split} scores", scores, dump_dir / f"{split}_scores.npy", writer, fix)
    if maps is not None:
        _non_finite(f"{split} maps", maps, dump_dir / f"{split}_maps.npy", writer, fix)
    return scores, maps


def params_hash(params: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=_json_default).encode()).hexdigest()[:16]
