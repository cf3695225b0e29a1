"""UniAD unified training: resume, validation selection, per-category scores, DDP equivalence."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image

from ad_pipeline.errors import UserError
from ad_pipeline.io import read_scores, sha256_of, write_scores
from ad_pipeline.methods.base import RunContext
from ad_pipeline.methods.uniad import train as train_module
from ad_pipeline.methods.uniad.config import Config
from ad_pipeline.methods.uniad.launch import torchrun_command
from ad_pipeline.methods.uniad.method import UniAD, load_model_state, save_model_state
from ad_pipeline.methods.uniad.score import score_uniad
from ad_pipeline.methods.uniad.train import train_unified

TINY = dict(image_size=64, hidden=16, heads=2, ffn=32, enc_layers=1, dec_layers=1, neighbor_size=3,
            batch_size=4, epochs=2, checkpoint_every=1, num_workers=0, lr=1e-3)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Two tiny categories of 4 normal images each (different colour statistics) + a shared feature cache."""
    root = tmp_path_factory.mktemp("uniad")
    rng = np.random.default_rng(0)
    sets = {}
    for cat, base in (("grey", (120, 120, 120)), ("red", (200, 40, 40))):
        (root / cat).mkdir()
        paths = []
        for i in range(4):
            img = np.clip(np.array(base) + rng.normal(0, 20, (64, 64, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / cat / f"{i}.png")
            paths.append(root / cat / f"{i}.png")
        sets[cat] = paths
    return root, sets


def ctx_for(root: Path) -> RunContext:
    return RunContext(seed=3, pretrained="false", progress=False, cache_dir=root / "cache")


def test_unified_run_scores_every_category(data, tmp_path):
    root, sets = data
    cfg = Config(**TINY)
    result = train_unified(sets, cfg, ctx_for(root), tmp_path / "ckpt")
    meta = result.meta
    assert meta["categories"] == ["grey", "red"] and meta["n_train"] == 8 and meta["epochs"] == 2
    assert meta["select"] == "last" and meta["selected_epoch"] == 2 and meta["weights"] == "random-init"
    assert len(meta["loss_history"]) == 2 and all(np.isfinite(meta["loss_history"]))
    assert (tmp_path / "ckpt" / "checkpoint.pth").exists()
    save_model_state(tmp_path / "model.pth", result.model_state)
    state = load_model_state(tmp_path / "model.pth")
    for cat, paths in sets.items():
        scores = score_uniad(state, paths, cfg, ctx_for(root))
        assert scores.scores.shape == (4,) and scores.maps.shape == (4, 64, 64)
        fingerprint = sha256_of([str(p) for p in paths])
        write_scores(tmp_path / cat, "test", fingerprint, scores.scores, scores.maps)
        back, maps = read_scores(tmp_path / cat, "test", fingerprint)
        assert np.array_equal(back, scores.scores) and maps.shape == (4, 64, 64)
        # image score = max of the 16x16 box-averaged map, so it never exceeds the map's maximum
        assert np.all(scores.scores <= scores.maps.reshape(4, -1).max(axis=1) + 1e-5)


def test_killed_run_resumes_to_identical_weights(data, tmp_path, monkeypatch):
    root, sets = data
    cfg = Config(**TINY)  # dropout 0.1 and jitter on: RNG state must be restored exactly
    uninterrupted = train_unified(sets, cfg, ctx_for(root), tmp_path / "a")

    real_epoch = train_module.train_epoch
    calls = []

    def killed_in_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_epoch", killed_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_unified(sets, cfg, ctx_for(root), tmp_path / "b")
    monkeypatch.setattr(train_module, "train_epoch", real_epoch)

    resumed = train_unified(sets, cfg, ctx_for(root), tmp_path / "b")
    assert resumed.meta["resumed_from_epoch"] == 1
    assert resumed.meta["loss_history"] == uninterrupted.meta["loss_history"]
    for k, v in uninterrupted.model_state.items():
        assert torch.equal(resumed.model_state[k], v), k

    # a finished run is not trained again; a changed setting does not resume a foreign checkpoint
    again = train_unified(sets, cfg, ctx_for(root), tmp_path / "b")
    assert again.meta["resumed_from_epoch"] == 2 and again.meta["loss_history"] == uninterrupted.meta["loss_history"]
    other = train_unified(sets, Config(**(TINY | {"lr": 5e-4})), ctx_for(root), tmp_path / "b")
    assert other.meta["resumed_from_epoch"] is None


def test_validation_selection_uses_validation_loss(data, tmp_path):
    root, sets = data
    cfg = Config(**(TINY | {"select": "validation", "epochs": 3}))
    val = {"grey": sets["grey"][:2], "red": sets["red"][:2]}
    meta = train_unified(sets, cfg, ctx_for(root), tmp_path / "ckpt", validation_sets=val).meta
    history = meta["val_loss_history"]
    assert [e for e, _ in history] == [1, 2, 3]
    assert meta["selected_epoch"] == min(history, key=lambda ev: ev[1])[0]
    assert meta["select"] == "validation" and meta["n_validation"] == 4


def test_bad_inputs_are_user_errors(data, tmp_path):
    root, sets = data
    with pytest.raises(UserError, match="validation_sets is empty"):
        train_unified(sets, Config(**(TINY | {"select": "validation"})), ctx_for(root), tmp_path)
    with pytest.raises(UserError, match="red"):
        train_unified({"grey": sets["grey"], "red": []}, Config(**TINY), ctx_for(root), tmp_path)
    (tmp_path / "checkpoint.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="unreadable UniAD checkpoint"):
        train_unified(sets, Config(**TINY), ctx_for(root), tmp_path)


def test_per_category_method_wrapper_round_trip(data, tmp_path):
    root, sets = data
    cfg = Config(**(TINY | {"epochs": 1}))
    method = UniAD(cfg, ctx_for(root))
    method.fit(sets["grey"], [])
    method.save(tmp_path)
    loaded = UniAD.load(tmp_path, cfg, ctx_for(root))
    assert np.array_equal(loaded.score(sets["red"]).scores, method.score(sets["red"]).scores)


def test_torchrun_command_runs_module_under_standalone_rendezvous():
    cmd = torchrun_command(4, ["-m", "stages", "uniad", "mvtec_ad"])
    assert cmd[1:4] == ["-m", "torch.distributed.run", "--standalone"]
    assert "--nproc_per_node=4" in cmd and cmd[-4:] == ["-m", "stages", "uniad", "mvtec_ad"]


def _ddp_worker(rank: int, world: int, port: int, sets: dict, cfg_json: str, root: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    result = train_unified(sets, Config.model_validate_json(cfg_json), ctx_for(Path(root)), Path(out) / "ckpt")
    torch.save({"meta": json.dumps(result.meta), "state": result.model_state}, Path(out) / f"rank{rank}.pth")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_gloo_ddp_matches_one_process_with_same_global_batch(data, tmp_path):
    root, sets = data
    one = Config(**(TINY | {"dropout": 0.0, "epochs": 3}))  # dropout masks are per process
    single = train_unified(sets, one, ctx_for(root), tmp_path / "single")
    two = Config(**(TINY | {"dropout": 0.0, "epochs": 3, "batch_size": 2,
                            "distributed": {"nproc_per_node": 2, "backend": "gloo"}}))
    mp.spawn(_ddp_worker, args=(2, _free_port(), sets, two.model_dump_json(), str(root), str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pth", weights_only=True) for r in range(2)]
    meta = json.loads(ranks[0]["meta"])
    assert meta["world_size"] == 2 and meta["global_batch"] == 4
    np.testing.assert_allclose(meta["loss_history"], single.meta["loss_history"], rtol=1e-4)
    for k, v in single.model_state.items():
        assert torch.equal(ranks[0]["state"][k], ranks[1]["state"][k]), k  # replicas stay in sync
        torch.testing.assert_close(ranks[0]["state"][k], v, rtol=1e-4, atol=1e-5)
