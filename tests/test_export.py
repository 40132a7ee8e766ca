"""napari-ssl export (napari_ssl.inference.export): the bundled demonstration model written as a MONAI bundle runs in
MONAI's own monai.bundle workflow without napari-ssl and gives napari-ssl's masks on a scan with a non-identity
direction; our bundle reader gives them too; the TorchScript export round-trips through our own format; the command
line writes both through the installed entry point and refuses a bad --format in one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_ssl import io
from napari_ssl.inference.segmenter import describe_segmenter, open_segmenter
from napari_ssl.io.volume import Volume
from napari_ssl.phantom import make_phantom

#: MONAI's own workflow on the exported bundle, in a child where napari_ssl cannot be imported
MONAI_ONLY = """
import sys
sys.modules["napari_ssl"] = None  # the bundle must not need napari-ssl
from monai.bundle import ConfigWorkflow
root, scan, out = sys.argv[1:4]
wf = ConfigWorkflow(config_file=root + "/configs/inference.json", meta_file=root + "/configs/metadata.json",
                    logging_file=False, workflow_type=None, bundle_root=root, datalist=[scan], output_dir=out,
                    device="$torch.device('cpu')")
wf.initialize(); wf.run(); wf.finalize()
"""


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    beside = Path(sys.executable).with_name("napari-ssl")
    return subprocess.run([str(beside) if beside.is_file() else "napari-ssl", *argv], capture_output=True, text=True,
                          encoding="utf-8", errors="replace", timeout=300)


@pytest.fixture(scope="module")
def oblique_scan(tmp_path_factory) -> Path:
    """A phantom resampled off the model's spacing, axes permuted and flipped (non-identity direction)."""
    image, _ = make_phantom(shape=(56, 110, 100), spacing=(2.8, 1.75, 1.9), seed=11)
    direction = np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    path = tmp_path_factory.mktemp("scan") / "oblique.nii.gz"
    io.write(Volume(image.array, image.spacing, (12.0, -30.0, 7.5), direction), path)
    return path


@pytest.fixture(scope="module")
def native_masks(oblique_scan) -> np.ndarray:
    import os

    from napari_ssl.inference.bundled import resolve_model
    from napari_ssl.inference.segment import segment

    os.environ["NAPARI_SSL_AMP"] = "0"  # float32, as MONAI's workflow runs
    try:
        masks = segment(io.read(oblique_scan), resolve_model("phantom-demo"), overlap=0.5, sw_device="cpu").array
    finally:
        del os.environ["NAPARI_SSL_AMP"]
    assert (masks == 1).sum() > 100  # the demonstration model finds the lesion
    return masks


def _agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    lesion_a, lesion_b = a == 1, b == 1
    return float((a == b).mean()), float(2 * (lesion_a & lesion_b).sum() / (lesion_a.sum() + lesion_b.sum()))


@pytest.mark.slow
def test_exported_bundle_reproduces_our_masks_in_monais_own_workflow(tmp_path, oblique_scan, native_masks,
                                                                      monkeypatch) -> None:
    out = _cli("export", "--model", "phantom-demo", "--format", "monai-bundle", "--out", str(tmp_path / "bundle"))
    assert out.returncode == 0, out.stderr
    root = tmp_path / "bundle"
    assert str(root) in out.stdout and not list(tmp_path.glob(".bundle.*"))  # renamed into place, no temp left
    for name in ("configs/inference.json", "configs/metadata.json", "models/model.pt", "models/model.ts"):
        assert (root / name).is_file(), name
    assert "napari_ssl" not in (root / "configs" / "inference.json").read_text()
    meta = json.loads((root / "configs" / "metadata.json").read_text())
    fmt = meta["network_data_format"]
    assert fmt["inputs"]["image"]["num_channels"] == 1 and fmt["inputs"]["image"]["channel_def"] == {"0": "phantom"}
    assert fmt["outputs"]["pred"]["channel_def"] == {"0": "background", "1": "lesion"}

    run = subprocess.run([sys.executable, "-c", MONAI_ONLY, str(root), str(oblique_scan), str(tmp_path / "masks")],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    written = io.read(next((tmp_path / "masks").glob("*_seg.nii.gz")))
    assert written.same_geometry(io.read(oblique_scan), atol=1e-3)
    voxels, dice = _agreement(written.array, native_masks)
    # the target is voxels >= 99.9 %; the lesion's Dice is lower than 1 where MONAI's Spacingd sizes the grid
    # round((n - 1) s / t) + 1 and SimpleITK round(n s / t) (here 126 and 127 voxels along x: windows one voxel apart)
    assert voxels >= 0.999 and dice >= 0.95, (voxels, dice)

    monkeypatch.setenv("NAPARI_SSL_AMP", "0")
    info = describe_segmenter(root)
    assert info.format == "monai-bundle" and info.names == {0: "background", 1: "lesion"}
    assert info.spacing == (2.5, 1.5, 1.5) and info.orientation == "LPS"
    ours = open_segmenter(info, device="cpu", trust=True).predict([io.read(oblique_scan)])
    voxels, dice = _agreement(ours.array, native_masks)
    assert voxels >= 0.999 and dice >= 0.95, (voxels, dice)


def test_torchscript_export_round_trips_through_our_format(tmp_path, oblique_scan, native_masks, monkeypatch) -> None:
    from napari_ssl.inference.export import export_model

    monkeypatch.setenv("NAPARI_SSL_AMP", "0")
    (tmp_path / "ts").mkdir()
    (tmp_path / "ts" / "stale.txt").write_text("replaced whole")
    target = export_model("phantom-demo", tmp_path / "ts", "torchscript")
    assert sorted(p.name for p in target.iterdir()) == ["model.json", "model.ts"]
    info = describe_segmenter(target)
    assert info.format == "torchscript" and info.channel_names == ("phantom",) and info.colors == {1: "#e6194b"}
    got = open_segmenter(info, device="cpu").predict([io.read(oblique_scan)])
    assert np.array_equal(got.array, native_masks)


def test_a_bad_format_is_one_line(tmp_path) -> None:
    out = _cli("export", "--model", "phantom-demo", "--format", "onnx", "--out", str(tmp_path / "x"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "monai-bundle, torchscript" in lines[0] and "'onnx'" in lines[0]
    assert not (tmp_path / "x").exists()
    out = _cli("export", "--model", str(tmp_path / "missing"), "--format", "torchscript", "--out", str(tmp_path / "y"))
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())  # nothing half-written
