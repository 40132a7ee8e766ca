"""``napari-ssl score``: pretext metrics of a pretraining checkpoint on held-out scans, as one JSON object."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from chance import untrained_copy
from synthetic import write_ct
from test_segment_shared import phantom, random_checkpoint

from napari_ssl import checkpoint
from napari_ssl.cli import main


def _score(model: Path, data: Path, capsys) -> dict[str, float]:
    capsys.readouterr()
    assert main(["score", "--model", str(model), "--data", str(data), "--samples", "4", "--device", "cpu"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1, out
    return json.loads(out[0])


def test_score_prints_every_pretext_metric(tmp_path, capsys) -> None:
    """Each metric against a reference it can fail: the same network before its first step (its untrained copy),
    scored on the same held-out samples. The restoration starts as the identity (a zero output layer), so the copy's
    PSNR gain is exactly 0 dB; two steps already beat that and the copy's slice positions; the copy's other answers
    sit at chance."""
    ct = write_ct(tmp_path / "train")
    held_out = write_ct(tmp_path / "held_out", seed=5)  # another phantom: noise, bias field and lesion differ
    assert main(["pretrain", "--pretext", "rubik,context,planes", "--data", str(ct), "--out", str(tmp_path / "ssl"),
                 "--steps", "2", "--lr", "3e-3", "--batch-size", "1", "--patch-size", "32", "--backbone", "tiny",
                 "--spacing", "6", "6", "6", "--device", "cpu", "--workers", "0", "--quiet"]) == 0
    trained = _score(tmp_path / "ssl", held_out, capsys)
    assert set(trained) == {"rubik/perm_top1", "rubik/rot_acc", "context/psnr", "context/psnr_input",
                            "context/psnr_gain", "planes/angle_error_deg", "planes/position_mae"}, trained
    untrained = _score(untrained_copy(tmp_path / "ssl", tmp_path / "untrained"), held_out, capsys)
    assert set(untrained) == set(trained)
    assert untrained["context/psnr_input"] == pytest.approx(trained["context/psnr_input"])  # the same samples
    assert untrained["context/psnr_gain"] == pytest.approx(0.0, abs=1e-6)
    assert untrained["context/psnr"] == pytest.approx(untrained["context/psnr_input"], abs=1e-6)
    assert trained["context/psnr_gain"] > 0.001, (trained, untrained)  # 0.011 dB
    assert trained["planes/position_mae"] < 0.75 * untrained["planes/position_mae"], (trained, untrained)
    n_perm = checkpoint.open_checkpoint(tmp_path / "ssl").pretext_options["rubik"]["n_permutations"]
    assert untrained["rubik/perm_top1"] <= 1 / n_perm + 1 / 8  # chance 1/100: at most one lucky sample of 4
    assert abs(untrained["rubik/rot_acc"] - 0.5) < 0.25  # chance: a coin per rotation flag
    assert abs(untrained["planes/angle_error_deg"] - 45.0) < 10.0  # chance: an angle unrelated to the line's


def test_score_refuses_what_it_cannot_use(tmp_path, capsys) -> None:
    seg = random_checkpoint(tmp_path / "seg")
    image, _ = phantom()
    from napari_ssl import io

    scan = io.write(image, tmp_path / "scan.nii.gz")
    assert main(["score", "--model", str(seg), "--data", str(scan)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "segment checkpoint; score measures what pretraining learned" in err[0]
    assert main(["score", "--model", str(seg), "--data", str(tmp_path / "nope.nii.gz")]) == 2
    assert "no such file" in capsys.readouterr().err
