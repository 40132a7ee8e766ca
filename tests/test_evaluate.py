"""The SSL-vs-scratch evaluation: a tiny smoke run through the CLI (tables, plot, equal budgets)."""

from __future__ import annotations

import csv

import pytest
from test_segment_shared import phantom, random_checkpoint

from napari_ssl import io
from napari_ssl.cli import main
from napari_ssl.evaluate import EvaluateConfig, summarize


def test_evaluate_smoke(tmp_path, capsys) -> None:
    images, labels = [], []
    for i in range(3):
        image, lab = phantom(shape=(34, 36, 36), seed=i)
        images.append(str(io.write(image, tmp_path / f"img{i}.nii.gz")))
        labels.append(str(io.write(lab, tmp_path / f"lab{i}.nii.gz")))
    model = random_checkpoint(tmp_path / "seg", patch=(32, 32, 32))  # a segmentation checkpoint also transfers
    out = tmp_path / "eval"
    code = main(["evaluate", "--pretrained", str(model), "--images", *images, "--labels", *labels,
                 "--test-fraction", "0.34", "--classes", "lesion=1", "--fractions", "1", "--seeds", "0",
                 "--steps", "1", "--patch-size", "32", "--device", "cpu", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr()
    assert "| method | label fraction | labelled scans | seeds | lesion |" in printed.out
    rows = list(csv.DictReader((out / "runs.csv").read_text().splitlines()))
    assert [(r["method"], r["n_labelled"]) for r in rows] == [("scratch", "2"), ("segment (seg)", "2")]
    assert all(0.0 <= float(r["dice/lesion"]) <= 1.0 and r["steps"] == "1" for r in rows)
    assert (out / "dice_vs_fraction.png").stat().st_size > 1000
    assert len(list(csv.DictReader((out / "summary.csv").read_text().splitlines()))) == 2


def test_summary_and_config_checks() -> None:
    rows = [{"method": "scratch", "fraction": 1.0, "n_labelled": 2, "seed": s, "dice/a": d} for s, d in ((0, 0.5), (1, 0.7))]
    (entry,) = summarize(rows)
    assert entry["dice/a/mean"] == pytest.approx(0.6) and entry["dice/a/std"] == pytest.approx(0.1414, abs=1e-3)
    with pytest.raises(ValueError, match="cannot be split"):
        EvaluateConfig(images=("a",), labels=("b",), classes="1", out="x")
    with pytest.raises(ValueError, match="fractions"):
        EvaluateConfig(images=("a", "b"), labels=("c", "d"), classes="1", out="x", fractions=(0.0,))
