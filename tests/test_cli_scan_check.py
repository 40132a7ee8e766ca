"""``napari-ssl segment``: a bundled model by name; the scan checked against the model's training data first."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from test_scan_check import ct

from napari_ssl import io
from napari_ssl.cli import main
from napari_ssl.phantom import make_phantom


def test_demo_model_by_name_on_the_sample_phantom_without_warning(tmp_path, capsys) -> None:
    image, labels = make_phantom(seed=0)
    scan = io.write(image, tmp_path / "phantom.nii.gz")
    out = tmp_path / "masks.nii.gz"
    assert main(["segment", "--model", "phantom-demo", "--input", str(scan), "--output", str(out), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "warning" not in captured.err and "lesion" in captured.out
    mask = io.read(out)
    truth = labels.array == 7
    assert mask.same_geometry(image) and 2 * np.sum(truth & (mask.array == 1)) / (truth.sum() + (mask.array == 1).sum()) > 0.8


def test_a_ct_given_to_the_mr_demo_model_warns_in_one_stderr_line(tmp_path) -> None:
    scan = io.write(ct(spacing=(2.5, 1.5, 1.5)), tmp_path / "ct.nii.gz")
    run = subprocess.run(
        [sys.executable, "-m", "napari_ssl.cli", "segment", "--model", "phantom-demo", "--input", str(scan),
         "--output", str(tmp_path / "m.nii.gz"), "--quiet"],
        capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    warned = [line for line in lines if line.startswith("napari-ssl segment: warning: ")]
    assert len(warned) == 1 and "trained on MR scans" in warned[0] and "looks like a CT" in warned[0], run.stderr
    assert "Traceback" not in run.stderr and (tmp_path / "m.nii.gz").is_file()  # a warning: the run went on


def test_channel_count_mismatch_is_one_error_line(tmp_path, capsys) -> None:
    image, _ = make_phantom(seed=0, shape=(16, 32, 32))
    a = io.write(image, tmp_path / "a.nii.gz")
    b = io.write(image, tmp_path / "b.nii.gz")
    code = main(["segment", "--model", "phantom-demo", "--input", f"{a},{b}", "--output", str(tmp_path / "m.nii.gz")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "takes 1 input channel(s) (phantom); 2 given" in err
    assert not (tmp_path / "m.nii.gz").exists()
