"""``torchrun --nproc_per_node=2`` on CPU (gloo): DistributedDataParallel completes and rank 0 alone writes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from napari_ssl import checkpoint

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_torchrun_two_processes_write_one_checkpoint(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs" / "ddp"
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--standalone",
        "-m",
        "napari_ssl.cli",
        "pretrain",
        "--pretext",
        "rubik,context",
        "--data",
        str(shared_data / "ct_unlabeled"),
        "--out",
        str(out),
        "--steps",
        "3",
        "--batch-size",
        "1",
        "--patch-size",
        "32",
        "--backbone",
        "tiny",
        "--threads",
        "1",
        "--val-samples",
        "1",
        "--save-every",
        "2",
        "--quiet",
    ]
    env["NAPARI_SSL_DIST_TIMEOUT"] = "120"  # a stuck collective fails with a traceback instead of hanging
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=400, cwd=tmp_path)
    except subprocess.TimeoutExpired as exc:
        tail = (exc.stderr or b"")[-3000:]
        pytest.fail(f"torchrun did not finish in {exc.timeout} s; stderr tail:\n{tail!r}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("finished step 3") == 1  # rank 0 only
    assert sorted(p.name for p in out.parent.iterdir()) == ["ddp"]  # one checkpoint, no temp folders
    state, meta = checkpoint.load(out)
    assert meta["world_size"] == 2 and meta["step"] == 3
    assert len(meta["history"]["loss"]) == 3
    assert any(k.startswith("backbone3d.") for k in state)
