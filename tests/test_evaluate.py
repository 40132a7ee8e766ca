"""The label-efficiency study: a tiny run through the CLI (tables, plot, equal budgets, paired gains), the summary
arithmetic and bad input."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from test_segment_shared import phantom, random_checkpoint

from napari_ssl import io
from napari_ssl.cli import main
from napari_ssl.study.evaluate import EvaluateConfig, labelled_cases, paired_gains, summarize


def _cases(tmp_path, n: int = 3) -> tuple[list[str], list[str]]:
    images, labels = [], []
    for i in range(n):
        image, lab = phantom(shape=(34, 36, 36), seed=i)
        images.append(str(io.write(image, tmp_path / f"img{i}.nii.gz")))
        labels.append(str(io.write(lab, tmp_path / f"lab{i}.nii.gz")))
    return images, labels


def _read(path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.read_text().splitlines()))


def test_evaluate_fraction_smoke(tmp_path, capsys) -> None:
    images, labels = _cases(tmp_path)
    model = random_checkpoint(tmp_path / "seg", patch=(32, 32, 32))  # a segmentation checkpoint also transfers
    out = tmp_path / "eval"
    code = main(["evaluate", "--pretrained", str(model), "--images", *images, "--labels", *labels,
                 "--test-fraction", "0.34", "--classes", "lesion=1", "--fractions", "1", "--seeds", "0",
                 "--steps", "1", "--patch-size", "32", "--device", "cpu", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr()
    assert "| method | labelled cases | seeds | steps | lesion Dice | lesion gain over scratch (paired) |" in printed.out
    rows = _read(out / "runs.csv")
    assert [(r["method"], r["n_labelled"], r["fraction"]) for r in rows] == [("scratch", "2", "1.0"),
                                                                            ("segment (seg)", "2", "1.0")]
    assert all(0.0 <= float(r["dice/lesion"]) <= 1.0 and r["steps"] == "1" for r in rows)
    assert (out / "dice_vs_labelled.png").stat().st_size > 1000
    assert len(_read(out / "summary.csv")) == 2


def test_study_n_labelled_seeds_and_paired_gains(tmp_path, capsys) -> None:
    """--n-labelled 1 2, two seeds, a named checkpoint, 32^3 patches on a tiny network (16^3 leaves 1 voxel at the bottleneck: instance norm refuses), the recipe options."""
    images, labels = _cases(tmp_path)
    (tmp_path / "t").mkdir()
    test_image, test_label = _cases(tmp_path / "t", 1)
    model = random_checkpoint(tmp_path / "seg", patch=(32, 32, 32), seed=3)
    out = tmp_path / "study"
    code = main(["evaluate", "--pretrained", f"ssl={model}", "--images", *images, "--labels", *labels,
                 "--test-images", *test_image, "--test-labels", *test_label, "--classes", "lesion=1",
                 "--n-labelled", "1", "2", "--seeds", "0", "1", "--steps", "2", "--patch-size", "32",
                 "--warmup", "1", "--transfer", "encoder", "--pretrained-lr-scale", "0.1", "--device", "cpu",
                 "--threads", "1", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    rows = _read(out / "runs.csv")
    assert sorted((r["method"], r["n_labelled"], r["seed"]) for r in rows) == sorted(
        (m, n, s) for m in ("scratch", "ssl") for n in ("1", "2") for s in ("0", "1"))
    for r in rows:  # seed s labels the cases labelled_cases(3, n, s), the same ones for every method
        picked = labelled_cases(3, int(r["n_labelled"]), int(r["seed"]))
        assert [c.split("/")[1] for c in r["cases"].split()] == [f"lab{i}.nii.gz" for i in picked]
        assert r["steps"] == "2"
    same = {(r["n_labelled"], r["seed"]): r["cases"] for r in rows if r["method"] == "scratch"}
    assert all(r["cases"] == same[(r["n_labelled"], r["seed"])] for r in rows)
    dice = {(r["method"], r["n_labelled"], r["seed"]): float(r["dice/lesion"]) for r in rows}
    gains = _read(out / "gains.csv")
    assert len(gains) == 4
    for g in gains:  # each gain is the paired difference with scratch at the same seed and labelled count
        assert float(g["diff"]) == pytest.approx(dice[("ssl", g["n_labelled"], g["seed"])]
                                                 - dice[("scratch", g["n_labelled"], g["seed"])])
    summary = {(e["method"], e["n_labelled"]): e for e in _read(out / "summary.csv")}
    assert set(summary) == {(m, n) for m in ("scratch", "ssl") for n in ("1", "2")}
    for n in ("1", "2"):
        diffs = [dice[("ssl", n, s)] - dice[("scratch", n, s)] for s in ("0", "1")]
        assert float(summary[("ssl", n)]["gain/lesion/mean"]) == pytest.approx(np.mean(diffs))
        assert float(summary[("ssl", n)]["gain/lesion/sd"]) == pytest.approx(np.std(diffs, ddof=1))
        assert summary[("scratch", n)]["gain/lesion/mean"] == ""
    from napari_ssl import checkpoint

    meta = checkpoint.open_checkpoint(out / "runs" / "seg_n1_s0")
    assert meta.config["pretrained_lr_scale"] == 0.1 and meta.config["transfer"] == "encoder"
    assert meta.config["warmup"] == 1 and meta.pretrained["parts"] == ["encoder"]
    table = (out / "summary.md").read_text()
    assert table.count("| ssl |") == 2 and table.count("| scratch |") == 2
    assert (out / "dice_vs_labelled.png").stat().st_size > 1000


def test_gains_are_paired_per_seed() -> None:
    """The gain is the mean and sd of per-seed differences, over the seeds both methods ran."""
    scratch = {0: 0.50, 1: 0.70, 2: 0.60}
    ssl = {0: 0.55, 1: 0.72, 3: 0.99}  # seed 2 missing, seed 3 has no scratch partner
    rows = [{"method": "scratch", "n_labelled": 1, "fraction": "", "seed": s, "steps": 5, "dice/a": d}
            for s, d in scratch.items()]
    rows += [{"method": "ssl", "n_labelled": 1, "fraction": "", "seed": s, "steps": 5, "dice/a": d}
             for s, d in ssl.items()]
    assert [(g["seed"], round(g["diff"], 6)) for g in paired_gains(rows)] == [(0, 0.05), (1, 0.02)]
    entry = {e["method"]: e for e in summarize(rows)}
    assert entry["ssl"]["gain/a/mean"] == pytest.approx(0.035)
    assert entry["ssl"]["gain/a/sd"] == pytest.approx(np.std([0.05, 0.02], ddof=1))
    assert entry["ssl"]["gain/a/wins"] == "2/2"
    assert entry["scratch"]["dice/a/mean"] == pytest.approx(0.6) and entry["scratch"]["dice/a/sd"] == pytest.approx(0.1)


def test_config_checks() -> None:
    with pytest.raises(ValueError, match="cannot be split"):
        EvaluateConfig(images=("a",), labels=("b",), classes="1", out="x")
    with pytest.raises(ValueError, match="fractions"):
        EvaluateConfig(images=("a", "b"), labels=("c", "d"), classes="1", out="x", fractions=(0.0,))
    cfg = EvaluateConfig(images=("a", "b", "c"), labels=("d", "e", "f"), classes="1", out="x", test_images=("t",),
                         test_labels=("u",), n_labelled=(1, 3), fractions=(0.34,), minutes=1.0)
    assert cfg.label_counts(3) == [(1, ""), (3, "")] and cfg.steps is None  # 0.34 of 3 is the 1 already asked
    assert EvaluateConfig(images=("a", "b"), labels=("c", "d"), classes="1", out="x").fractions == (0.25, 0.5, 1.0)


def test_seeds_label_different_cases_while_the_pool_lasts() -> None:
    one = [labelled_cases(10, 1, s) for s in range(10)]
    assert sorted(i for p in one for i in p) == list(range(10))  # 10 seeds, 10 different cases
    three = [set(labelled_cases(10, 3, s)) for s in range(3)]
    assert all(len(p) == 3 for p in three) and not (three[0] & three[1] or three[1] & three[2] or three[0] & three[2])
    assert labelled_cases(10, 3, 1) == labelled_cases(10, 3, 1)  # the same for every method
    assert labelled_cases(3, 2, 5) == sorted(set(labelled_cases(3, 2, 5)))  # wrapping round never repeats a case


def test_too_many_labelled_cases_is_one_line(tmp_path, capsys) -> None:
    images, labels = _cases(tmp_path, 2)
    code = main(["evaluate", "--images", *images, "--labels", *labels, "--test-fraction", "0.5",
                 "--classes", "lesion=1", "--n-labelled", "1", "3", "--out", str(tmp_path / "e")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == ("napari-ssl evaluate: error: --n-labelled 3 is more than the 1 training case(s) "
                                 "(2 given, 1 held out for testing)")
    assert not (tmp_path / "e").exists()
