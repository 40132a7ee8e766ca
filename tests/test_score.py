"""``napari-ssl score``: pretext metrics of a pretraining checkpoint on held-out scans, as one JSON object."""

from __future__ import annotations

import json

from test_segment_shared import phantom, random_checkpoint

from napari_ssl.cli import main


def test_score_prints_every_pretext_metric(shared_data, tmp_path, capsys) -> None:
    ct = shared_data / "ct_unlabeled" / "ct_thorax_abdomen.nii.gz"
    assert main(["pretrain", "--pretext", "rubik,context,planes", "--data", str(ct), "--out", str(tmp_path / "ssl"),
                 "--steps", "2", "--batch-size", "1", "--patch-size", "32", "--backbone", "tiny", "--spacing", "6", "6",
                 "6", "--device", "cpu", "--workers", "0", "--quiet"]) == 0
    capsys.readouterr()
    held_out = shared_data / "ct_organs" / "ct.nii.gz"
    assert main(["score", "--model", str(tmp_path / "ssl"), "--data", str(held_out), "--samples", "4",
                 "--device", "cpu"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    result = json.loads(out[0])
    for key in ("rubik/perm_top1", "rubik/rot_acc", "context/psnr_gain", "planes/angle_error_deg",
                "planes/position_mae"):
        assert key in result, (key, result)
    assert 0 <= result["rubik/perm_top1"] <= 1 and 0 <= result["rubik/rot_acc"] <= 1
    assert 0 <= result["planes/angle_error_deg"] <= 90 and 0 <= result["planes/position_mae"] <= 1


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
