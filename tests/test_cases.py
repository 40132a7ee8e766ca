"""Several modalities by default: a folder of case folders gives every case its channels in one order (flair, t1, t1ce,
t2), lists the cases it cannot use with a reason, and ``finetune --cases DIR`` trains a multi-channel model from it
with no other flag (classes from the first case's labels, each channel normalised on its own)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from brats_cases import CASES, MODALITIES, crop_case

from napari_ssl.classes import default_classes
from napari_ssl.io.volume import Volume
from napari_ssl.training.cases import channel_names, find_cases, split_modality


def _touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")  # only names are read


def test_case_folders_one_channel_order_and_the_cases_left_out(tmp_path) -> None:
    root = tmp_path / "brats"
    _touch(root / "A", "t2.nii.gz", "t1ce.nii.gz", "flair.nii.gz", "t1.nii.gz", "seg.nii.gz", "adc.nii.gz")
    _touch(root / "B", "B_T2.nii.gz", "B_FLAIR.nii.gz", "B_t1ce.nii.gz", "B_T1.nii.gz", "B_label.nii.gz")
    _touch(root / "C", "flair.nii.gz", "t1.nii.gz", "t1ce.nii.gz", "seg.nii.gz")  # no t2
    _touch(root / "D", *(f"{m}.nii.gz" for m in MODALITIES))  # no labels
    _touch(root / "E", *(f"{m}.nii.gz" for m in MODALITIES), "seg.nii.gz", "mask.nii.gz")  # two label files
    (root / "notes.txt").write_text("not a scan")
    found = find_cases(root)
    assert found.channels == ("flair", "t1", "t1ce", "t2")
    assert [c.name for c in found.cases] == ["A", "B"]
    a, b = found.cases
    assert [Path(p).name for p in a.channels] == ["flair.nii.gz", "t1.nii.gz", "t1ce.nii.gz", "t2.nii.gz"]
    assert [Path(p).name for p in b.channels] == ["B_FLAIR.nii.gz", "B_T1.nii.gz", "B_t1ce.nii.gz", "B_T2.nii.gz"]
    assert Path(a.labels).name == "seg.nii.gz" and Path(b.labels).name == "B_label.nii.gz"
    assert dict(found.skipped) == {
        "C": "no t2 (the other cases have flair, t1, t1ce, t2)",
        "D": "no label file (seg, label or mask in its name)",
        "E": "2 label files (mask.nii.gz, seg.nii.gz); keep one",
    }
    assert [Path(p).name for p in found.ignored] == ["adc.nii.gz"]  # only A has it: no channel
    assert found.describe() == "2 cases, 4 channels: flair, t1, t1ce, t2; 3 skipped"
    assert found.images[0] == ",".join(a.channels)  # FinetuneConfig's form of a case's channels

    nested = find_cases(tmp_path)  # one level deeper (brats/HGG/<case>) is found too, named by its path
    assert [c.name for c in nested.cases] == ["brats/A", "brats/B"]
    single = find_cases(root / "A")  # one case folder
    assert [c.name for c in single.cases] == ["A"] and single.channels == ("adc", "flair", "t1", "t1ce", "t2")


def test_a_flat_folder_of_case_modality_files(tmp_path) -> None:
    names = [f"Brats18_{c}_{m}.nii.gz" for c in ("X", "Y") for m in (*MODALITIES, "seg")]
    _touch(tmp_path / "flat", *names, "Brats18_Z_flair.nii.gz", "Brats18_Z_t1.nii.gz")
    found = find_cases(tmp_path / "flat")
    assert [c.name for c in found.cases] == ["Brats18_X", "Brats18_Y"] and found.channels == MODALITIES
    assert [Path(p).name for p in found.cases[1].channels] == [f"Brats18_Y_{m}.nii.gz" for m in MODALITIES]
    assert found.skipped == (("Brats18_Z", "no label file (seg, label or mask in its name)"),)
    assert split_modality("Brats18_X_flair") == ("Brats18_X", "flair") and split_modality("t1ce") == ("", "t1ce")
    assert split_modality("scan") is None


def test_brats_2023_names_and_lesion_masks_are_cases(shared_data, tmp_path) -> None:
    """BraTS 2023's flat names (``-t1n``, ``-t1c``, ``-t2w``, ``-t2f``, ``-seg``) and the shared MS brains, whose
    masks are ``lesions.nii.gz``, are cases without renaming anything."""
    names = [f"BraTS-GLI-0000{k}-000-{m}.nii.gz" for k in (1, 2) for m in ("t1n", "t1c", "t2w", "t2f", "seg")]
    _touch(tmp_path / "brats2023", *names)
    found = find_cases(tmp_path / "brats2023")
    assert [c.name for c in found.cases] == ["BraTS-GLI-00001-000", "BraTS-GLI-00002-000"]
    assert found.channels == ("t1c", "t1n", "t2f", "t2w") and Path(found.cases[0].labels).name.endswith("-seg.nii.gz")
    ms = find_cases(shared_data / "ms_lesions")
    assert len(ms.cases) == 3 and ms.channels == ("flair", "t1") and not ms.skipped
    assert all(Path(c.labels).name == "lesions.nii.gz" for c in ms.cases)


def test_no_usable_case_is_one_sentence(tmp_path) -> None:
    _touch(tmp_path / "a", "flair.nii.gz", "t1.nii.gz")
    with pytest.raises(ValueError, match=r"^no usable case in .*a: a: no label file \(seg, label or mask in its name\)$"):
        find_cases(tmp_path / "a")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no scans"):
        find_cases(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        find_cases(tmp_path / "nowhere")


def test_default_classes_and_channel_names_of_case_folders() -> None:
    assert default_classes({0, 1, 2, 4}) == ("whole_tumor=1+2+4",)  # BraTS-like: whole tumour
    assert default_classes([3, 9]) == ("class_3=3", "class_9=9")  # else every value
    assert default_classes([0]) == ()
    # BraTS 2023 names the channels after the case: t1n of every case folder is the channel "t1n"
    cases = [[Volume(np.zeros((4, 4, 4)), path=f"/d/BraTS-GLI-{i}/BraTS-GLI-{i}-t1n.nii.gz",
                     name=f"BraTS-GLI-{i}-t1n")] for i in ("00001-000", "00002-000")]
    assert channel_names(cases) == ["t1n"]


@pytest.fixture(scope="module")
def brats(shared_data, tmp_path_factory) -> Path:
    """Three BraTS cases cropped to 32^3 (all four modalities), one without t2, one without labels."""
    root = tmp_path_factory.mktemp("cases") / "brats"
    for case in CASES[:3]:
        crop_case(shared_data / "brats" / case, root / case)
    crop_case(shared_data / "brats" / CASES[3], root / "no_t2", files=("flair", "t1", "t1ce", "seg"))
    crop_case(shared_data / "brats" / CASES[3], root / "unlabelled", files=MODALITIES)
    return root


def test_cli_cases_trains_four_channels_each_normalised_alone(brats, shared_data, tmp_path, capsys) -> None:
    from napari_ssl import checkpoint, io
    from napari_ssl.cli import main
    from napari_ssl.preprocess import prepare_channels, to_model_grid

    before = sorted(p.relative_to(brats) for p in brats.rglob("*"))
    held_out = crop_case(shared_data / "brats" / CASES[3], tmp_path / "val" / CASES[3]).parent
    out = tmp_path / "model"
    code = main(["finetune", "--pretrained", "none", "--cases", str(brats), "--out", str(out), "--steps", "2",
                 "--patch-size", "32", "16", "16", "--backbone", "tiny", "--device", "cpu", "--threads", "1", "--no-amp",
                 "--val-cases", str(held_out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "3 cases, 4 channels: flair, t1, t1ce, t2; 2 skipped" in printed.out
    assert "classes whole_tumor=1+2+4 (those of Brats18_2013_11_1's labels" in printed.out
    assert "skipped case no_t2: no t2 (the other cases have flair, t1, t1ce, t2)" in printed.err
    assert "skipped case unlabelled: no label file" in printed.err
    assert "finished step 2" in printed.out
    assert sorted(p.relative_to(brats) for p in brats.rglob("*")) == before  # nothing written into the data

    model = checkpoint.open_checkpoint(out)
    assert model.channels == ("flair", "t1", "t1ce", "t2") and model.in_channels == 4
    assert [(c.name, c.ids) for c in model.classes] == [("whole_tumor", (1, 2, 4))]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["n_train"] == 3 and len(meta["config"]["images"]) == 3
    assert meta["n_val"] == 1 and meta["validation"] == "explicit"  # --val-cases: nothing split off the cases
    assert meta["config"]["val_images"] == [",".join(str(held_out / CASES[3] / f"{m}.nii.gz") for m in MODALITIES)]
    norm = model.normalization
    assert norm.mode == "zscore_nonzero"
    channels = [io.read(brats / CASES[0] / f"{m}.nii.gz") for m in MODALITIES]
    raw = [float(c.array[c.array != 0].mean()) for c in channels]
    assert max(raw) > 1.5 * min(raw)  # the modalities' own scales differ: one normalisation could not fit all
    prepared, _ = prepare_channels(channels, spacing=model.spacing, normalization=norm)
    for chan, volume, name in zip(prepared, channels, MODALITIES, strict=True):
        brain = to_model_grid(volume.with_array((volume.array != 0).astype(np.uint8)), model.spacing,
                              labels=True).array > 0
        assert abs(chan[brain].mean()) < 0.1 and abs(chan[brain].std() - 1) < 0.15, name


@pytest.mark.parametrize(("argv", "message"), [
    ([], "give the training data: --cases DIR (a folder of case folders), or --images and --labels"),
    (["--images", "a.nii.gz"], "--labels is missing: give one label volume per image, or a folder of cases with "
                               "--cases DIR"),
    (["--cases", "x", "--images", "a.nii.gz"], "give either --cases DIR or --images and --labels, not both"),
    (["--cases", "nowhere"], "no such folder"),
])
def test_cli_data_flags_give_one_line(argv, message, tmp_path, capsys, monkeypatch) -> None:
    from napari_ssl.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["finetune", "--pretrained", "none", "--out", str(tmp_path / "m"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("napari-ssl finetune: error: ") and message in err[0], err
    assert not (tmp_path / "m").exists()
