"""Imaging planes on native multi-view acquisitions (the real cardiac exam): targets from the DICOM geometry,
an honest held-out split, a tiny pretraining whose loss goes down, ``score`` on held-out views, and the one-line
refusal of 2D-only data for the 3D pretexts.

The reference geometry is computed independently with pydicom from ImagePositionPatient (IPP),
ImageOrientationPatient (IOP) and PixelSpacing, in LPS order (distances do not depend on the axis order).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from napari_ssl.io.volume import Volume
from napari_ssl.pretext.planes import native as pn
from napari_ssl.pretext.planes.geometry import planes_from_images

SIZE = 32
SIGMA = 7.56


@pytest.fixture(scope="module")
def exam_dir(shared_data) -> Path:
    return shared_data / "cardiac_views" / "056B"


@pytest.fixture(scope="module")
def exam(exam_dir):
    from napari_ssl import io

    return pn.build_exams(io.read_all(exam_dir), SIZE, SIGMA, None, 0.2)[0]


def _dicom(path: Path) -> dict[str, np.ndarray]:
    pydicom = pytest.importorskip("pydicom")
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    iop = np.array(ds.ImageOrientationPatient, dtype=float)
    return {"ipp": np.array(ds.ImagePositionPatient, dtype=float), "row_dir": iop[:3], "col_dir": iop[3:],
            "spacing": np.array(ds.PixelSpacing, dtype=float), "shape": np.array([ds.Rows, ds.Columns]),
            "normal": np.cross(iop[:3], iop[3:])}


def _pixel_world(g: dict[str, np.ndarray], rc: np.ndarray) -> np.ndarray:
    """World (LPS) of the network input's pixels (a, b): the image padded to a centred square, resized."""
    h, w = g["shape"]
    side = max(h, w)
    scale = (side - 1) / (SIZE - 1)
    r = rc[..., 0] * scale - (side - h) // 2
    c = rc[..., 1] * scale - (side - w) // 2
    dr, dc = g["spacing"]
    return g["ipp"] + c[..., None] * dc * g["row_dir"] + r[..., None] * dr * g["col_dir"]


def _first(folder: Path) -> Path:
    return sorted(folder.iterdir())[0]


def _sax_files(exam_dir: Path) -> list[Path]:
    """The short-axis stack's files in slice order (along their normal, as the reader sorts them)."""
    files = sorted((exam_dir / "Series0005_trufi_short-axis").iterdir())
    geo = [_dicom(f) for f in files]
    order = np.argsort([g["ipp"] @ geo[0]["normal"] for g in geo])
    return [files[k] for k in order]


@pytest.mark.parametrize(
    ("view", "slice_index", "other"),
    [("trufi_4-chamber", None, "trufi_2-chamber"), ("TF_Cine_Retro_iPAT_LVOT", None, "TF_Cine_Retro_iPAT_4C"),
     ("trufi_short-axis", 2, "TF_Cine_Retro_iPAT_2C"), ("TF_Cine_Retro_iPAT_2C", None, "trufi_short-axis")],
)
def test_heatmaps_equal_the_dicom_geometry(exam, exam_dir, view, slice_index, other) -> None:
    folders = {"trufi_4-chamber": "Series0004_trufi_4-chamber", "trufi_2-chamber": "Series0003_trufi_2-chamber",
               "TF_Cine_Retro_iPAT_LVOT": "Series0008_cine_lvot", "TF_Cine_Retro_iPAT_4C": "Series0006_cine_4ch",
               "TF_Cine_Retro_iPAT_2C": "Series0007_cine_2ch"}
    sax = _sax_files(exam_dir)
    gi = _dicom(sax[slice_index] if slice_index is not None else _first(exam_dir / folders[view]))
    gj = _dicom(sax[4] if other == "trufi_short-axis" else _first(exam_dir / folders[other]))  # stack: middle
    p = int(exam.plane_of[view][0 if slice_index is None else slice_index])
    heat = exam.heat[p, exam.reference[other]]
    assert exam.has_line[p, exam.reference[other]]
    rc = np.stack(np.meshgrid(np.arange(SIZE), np.arange(SIZE), indexing="ij"), axis=-1).astype(float)
    world = _pixel_world(gi, rc)
    sine = np.linalg.norm(np.cross(gi["normal"], gj["normal"]))
    in_plane = (world - gj["ipp"]) @ gj["normal"] / sine  # in-plane distance (mm) to the intersection line
    np.testing.assert_allclose(heat, np.exp(-in_plane**2 / (2 * SIGMA**2)), atol=1e-4)
    peak = np.unravel_index(np.argmax(heat), heat.shape)  # the peak lies on the true line (within half a pixel)
    half_diagonal = 0.5 * math.hypot(np.linalg.norm(world[1, 0] - world[0, 0]), np.linalg.norm(world[0, 1] - world[0, 0]))
    assert heat[peak] > 0.5 and abs(in_plane[peak]) <= half_diagonal


def test_stack_positions_equal_the_dicom_positions(exam, exam_dir) -> None:
    depth = np.array([_dicom(f)["ipp"] @ _dicom(f)["normal"] for f in _sax_files(exam_dir)])
    expected = (depth - depth.min()) / (depth.max() - depth.min())
    planes = exam.plane_of["trufi_short-axis"]
    np.testing.assert_allclose(exam.position[planes], expected, atol=1e-5)
    assert exam.in_stack[planes].all() and not exam.in_stack[exam.plane_of["trufi_4-chamber"]].any()


def test_held_out_images_never_reach_training(exam) -> None:
    channels = list(exam.images)
    assert exam.held_out["TF_Cine_Retro_iPAT_4C"].sum() == 5 and exam.held_out["trufi_short-axis"].sum() == 2
    assert not exam.held_out["trufi_2-chamber"].any()  # one image: nothing to hold out
    for split in ("train", "held_out"):
        ds = pn.NativeViewsDataset([exam], channels, 3, 12, split)
        for k in range(len(ds)):
            s = ds[k]
            for i, key in enumerate(channels):
                img = s["planes.images"][i, 0]
                match = [m for m, ref in enumerate(exam.images[key]) if np.array_equal(ref, img)]
                if not img.any():  # a blank view (no held-out image): no target either
                    assert split == "held_out" and not s["planes.heatmaps"][i].any()
                    assert s["planes.position_mask"][i] == 0
                    continue
                assert match and all(exam.held_out[key][m] == (split == "held_out") for m in match), (split, key)


def test_resized_geometry_places_pixels_where_the_original_had_them() -> None:
    a = np.zeros((1, 12, 20), np.float32)
    rot = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))[0]
    vols = [Volume(a, spacing=(1.0, 1.5, 0.8), origin=(3.0, -2.0, 7.0), direction=rot, name="a"),
            Volume(a, spacing=(1.0, 1.0, 1.0), name="b")]
    params = planes_from_images(vols)
    out, (top, left) = pn.resize_geometry(params, 0, 9)
    assert (top, left) == (4, 0) and out.sizes[0] == (9, 9) and out.sizes[1] == params.sizes[1]
    for ab in ([0, 0], [8, 8], [3, 5]):
        orig = np.asarray(ab, float) * (19 / 8) - [top, left]
        np.testing.assert_allclose(out.pixel_to_world(0, ab), params.pixel_to_world(0, orig), atol=1e-9)
    assert math.isclose(np.dot(out.arrays()["normal"][0], params.arrays()["normal"][0]), 1.0)


@pytest.fixture(scope="module")
def trained(exam_dir, tmp_path_factory):
    from napari_ssl.training.config import PretrainConfig
    from napari_ssl.training.pretrain import pretrain

    out = tmp_path_factory.mktemp("native") / "ssl"
    cfg = PretrainConfig(pretexts=("planes",), data=(str(exam_dir),), out=str(out), steps=10, batch_size=2,
                         patch_size=SIZE, backbone="tiny", device="cpu", num_workers=0, val_samples=4, save_every=0)
    finished = [e for e in pretrain(cfg) if type(e).__name__ == "Finished"][-1]
    return out, finished


@pytest.fixture(scope="module")
def untrained(trained, exam_dir, tmp_path_factory) -> dict[str, float]:
    """The reference: ``score`` of the trained network's untrained copy on the exam's held-out views."""
    from chance import untrained_copy

    from napari_ssl.study.score import score

    out, _ = trained
    copy = untrained_copy(out, tmp_path_factory.mktemp("native") / "untrained")
    return score(copy, [exam_dir], samples=6, device="cpu")


def test_planes_train_on_native_views(trained, untrained) -> None:
    out, finished = trained
    meta = json.loads((out / "meta.json").read_text())
    loss = meta["history"]["loss"]
    assert len(loss) == 10 and np.mean(loss[:3]) > np.mean(loss[-3:]), loss
    assert meta["model"]["heads"]["planes"]["n_views"] == 7 and len(meta["native_views"]["channels"]) == 7
    assert meta["n_val"] == 4 * 5 + 2 and meta["n_train"] == 2 + 6 + 4 * 20
    # the held-out views' metrics beat those of the network before training (33 vs 37 degrees, 0.06 vs 0.58)
    assert finished.metrics["planes/angle_error_deg"] < untrained["planes/angle_error_deg"], (finished, untrained)
    assert finished.metrics["planes/position_mae"] < 0.75 * untrained["planes/position_mae"], (finished, untrained)


def test_score_reports_held_out_native_views(trained, untrained, exam_dir, capsys) -> None:
    """``score`` on the exam measures the views never trained on: the trained network beats its untrained copy on
    the same samples (34 vs 37 degrees, positions 0.29 vs 0.58)."""
    from napari_ssl.cli import main

    out, _ = trained
    assert main(["score", "--model", str(out), "--data", str(exam_dir), "--samples", "6", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result) == set(untrained)
    assert result["planes/angle_error_deg"] < untrained["planes/angle_error_deg"] - 1.0, (result, untrained)
    assert result["planes/position_mae"] < 0.75 * untrained["planes/position_mae"], (result, untrained)


def test_two_d_only_data_refused_by_3d_pretexts(exam_dir, tmp_path, capsys) -> None:
    from napari_ssl.cli import main

    views = tmp_path / "views"
    views.mkdir()
    for name in ("Series0003_trufi_2-chamber", "Series0004_trufi_4-chamber"):
        shutil.copytree(exam_dir / name, views / name)
    for pretext, data in (("rubik", views), ("context", exam_dir)):
        code = main(["pretrain", "--pretext", pretext, "--data", str(data), "--out", str(tmp_path / "x"),
                     "--steps", "1", "--device", "cpu", "--quiet"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1, err
        assert f"{pretext} needs 3D scans; {data} holds only 2D images" in err[0]
    assert not (tmp_path / "x").exists()
