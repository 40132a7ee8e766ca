"""``torchrun --nproc_per_node=2`` on CPU (gloo): DistributedDataParallel completes and rank 0 alone writes."""

from __future__ import annotations

import os
import signal
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
    # own session: on a timeout the whole group (torchrun and both workers) is killed, no orphans
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"torchrun did not finish in 300 s; stderr tail:\n{stderr[-3000:]}")
    assert proc.returncode == 0, stderr[-3000:]
    assert stdout.count("finished step 3") == 1  # rank 0 only
    # one checkpoint, no temp folders (beside it the prepared dataset both ranks built)
    assert sorted(p.name for p in out.parent.iterdir()) == ["ddp", "ddp.prepared"]
    assert not list((out.parent / "ddp.prepared").glob(".tmp-*"))
    state, meta = checkpoint.load(out)
    assert meta.world_size == 2 and meta.step == 3
    assert len(meta.history["loss"]) == 3
    assert any(k.startswith("backbone3d.") for k in state)
