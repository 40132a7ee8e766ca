"""``torchrun --nproc_per_node=2`` on CPU (gloo): DistributedDataParallel completes and rank 0 alone writes."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from napari_ssl import checkpoint
from napari_ssl.training.prepared import MANIFEST

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_torchrun_two_processes_write_one_checkpoint(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs" / "ddp"
    stdout, _ = _torchrun(["--pretext", "rubik,context", "--data", str(shared_data / "ct_unlabeled"), "--out", str(out),
                           "--steps", "3", "--batch-size", "1", "--patch-size", "32", "--backbone", "tiny",
                           "--threads", "1", "--val-samples", "1", "--save-every", "2", "--quiet"], tmp_path)
    assert stdout.count("finished step 3") == 1  # rank 0 only
    # one checkpoint, no temp folders (beside it the prepared dataset rank 0 built)
    assert sorted(p.name for p in out.parent.iterdir()) == ["ddp", "ddp.prepared"]
    assert not list((out.parent / "ddp.prepared").glob(".tmp-*"))
    state, meta = checkpoint.load(out)
    assert meta.world_size == 2 and meta.step == 3
    assert len(meta.history["loss"]) == 3
    assert any(k.startswith("backbone3d.") for k in state)


def _torchrun(args: list[str], cwd: Path) -> tuple[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    env["NAPARI_SSL_DIST_TIMEOUT"] = "120"  # a stuck collective fails with a traceback instead of hanging
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone", "-m", "napari_ssl.cli",
           "pretrain", *args]
    # own session: on a timeout the whole group (torchrun and both workers) is killed, no orphans
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"torchrun did not finish in 300 s; stderr tail:\n{stderr[-3000:]}")
    assert proc.returncode == 0, stderr[-3000:]
    return stdout, stderr


def _rank_lines(stderr: str) -> dict[int, tuple[int, list[int]]]:
    """``rank -> (entries built, scan indices sampled)`` from each rank's line."""
    found = {}
    for m in re.finditer(r"napari-ssl rank (\d)/2: prepared entries (\d+) built, (\d+) reused; "
                         r"samples from scans \[([\d, ]*)\] of 2", stderr):
        found[int(m.group(1))] = (int(m.group(2)), [int(i) for i in m.group(4).split(",") if i.strip()])
    return found


@pytest.mark.slow
def test_rank0_builds_the_prepared_dataset_and_ranks_sample_disjoint_shares(shared_data: Path,
                                                                            tmp_path: Path) -> None:
    """Two gloo ranks on a folder of two scans (and a text file), ``--cache`` shared: rank 0 builds both entries,
    rank 1 builds none (it waited, then opened them); each rank samples from its own scan; a second identical run
    (the cache reused by both) gives the same losses."""
    data = tmp_path / "scans"
    data.mkdir()
    shutil.copy(shared_data / "ct_organs/ct.nii.gz", data / "a_ct.nii.gz")
    shutil.copy(shared_data / "mr_organs/mr.nii.gz", data / "b_mr.nii.gz")
    (data / "notes.txt").write_text("not a scan")
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"val_fraction": 0.0}))
    cache = tmp_path / "shared_prepared"
    losses = []
    for k in range(2):
        out = tmp_path / f"run{k}"
        _, stderr = _torchrun(["--config", str(config), "--pretext", "context", "--data", str(data),
                               "--out", str(out), "--cache", str(cache), "--steps", "3", "--batch-size", "1",
                               "--patch-size", "32", "--backbone", "tiny", "--threads", "1", "--val-samples", "1",
                               "--quiet"], tmp_path)
        ranks = _rank_lines(stderr)
        assert sorted(ranks) == [0, 1], stderr[-3000:]
        assert ranks[1][0] == 0  # rank 1 never builds
        assert ranks[0][0] == (2 if k == 0 else 0)  # the first run's rank 0 builds both; the second reuses them
        assert sorted(ranks[0][1] + ranks[1][1]) == [0, 1]  # disjoint shares covering the training scans
        assert len(list(cache.glob(f"*/{MANIFEST}"))) == 2 and not list(cache.glob(".tmp-*"))
        assert not (out.parent / f"run{k}.prepared").exists()  # --cache: nothing beside the checkpoint
        _, meta = checkpoint.load(out)
        assert meta.world_size == 2 and len(meta.history["loss"]) == 3
        losses.append(meta.history["loss"])
    assert losses[0] == losses[1]


def test_rank_shares_are_disjoint_and_cover_the_scans() -> None:
    from napari_ssl.training.pretrain import rank_share

    for n, world in ((2, 2), (5, 2), (7, 4), (8, 8)):
        shares = [rank_share(n, world, r) for r in range(world)]
        assert sorted(i for s in shares for i in s) == list(range(n))
        assert all(shares)  # no rank without scans
    assert rank_share(1, 2, 1) == [0]  # fewer scans than ranks: every rank draws from all of them
    assert rank_share(3, 1, 0) == [0, 1, 2]
