"""napari-ssl export (napari_ssl.inference.export): the bundled demonstration model written as a MONAI bundle runs in
MONAI's own monai.bundle workflow without napari-ssl and gives napari-ssl's masks on a scan with a non-identity
direction and on a real MR (both resampled to our model grid, which Spacingd does not give); our bundle reader gives
them too; the TorchScript export round-trips through our own format; the command
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


def _native(scan: Path) -> np.ndarray:
    import os

    from napari_ssl.inference.bundled import resolve_model
    from napari_ssl.inference.segment import segment

    os.environ["NAPARI_SSL_AMP"] = "0"  # float32, as MONAI's workflow runs
    try:
        return segment(io.read(scan), resolve_model("phantom-demo"), overlap=0.5, sw_device="cpu").array
    finally:
        del os.environ["NAPARI_SSL_AMP"]


@pytest.fixture(scope="module")
def native_masks(oblique_scan) -> np.ndarray:
    masks = _native(oblique_scan)
    assert (masks == 1).sum() > 100  # the demonstration model finds the lesion
    return masks


@pytest.fixture(scope="module")
def exported_bundle(tmp_path_factory) -> Path:
    """``phantom-demo`` written by the command line as a MONAI bundle."""
    tmp = tmp_path_factory.mktemp("export")
    out = _cli("export", "--model", "phantom-demo", "--format", "monai-bundle", "--out", str(tmp / "bundle"))
    assert out.returncode == 0, out.stderr
    root = tmp / "bundle"
    assert str(root) in out.stdout and not list(tmp.glob(".bundle.*"))  # renamed into place, no temp left
    return root


def _agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    lesion_a, lesion_b = a == 1, b == 1
    return float((a == b).mean()), float(2 * (lesion_a & lesion_b).sum() / (lesion_a.sum() + lesion_b.sum()))


def _monai_workflow(root: Path, scan: Path, out: Path) -> Volume:
    run = subprocess.run([sys.executable, "-c", MONAI_ONLY, str(root), str(scan), str(out)], capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    return io.read(next(out.glob("*_seg.nii.gz")))


@pytest.mark.slow
def test_exported_bundle_reproduces_our_masks_in_monais_own_workflow(tmp_path, exported_bundle, oblique_scan,
                                                                      native_masks, monkeypatch) -> None:
    root = exported_bundle
    for name in ("configs/inference.json", "configs/metadata.json", "models/model.pt", "models/model.ts"):
        assert (root / name).is_file(), name
    assert "napari_ssl" not in (root / "configs" / "inference.json").read_text()
    meta = json.loads((root / "configs" / "metadata.json").read_text())
    fmt = meta["network_data_format"]
    assert fmt["inputs"]["image"]["num_channels"] == 1 and fmt["inputs"]["image"]["channel_def"] == {"0": "phantom"}
    assert fmt["outputs"]["pred"]["channel_def"] == {"0": "background", "1": "lesion"}
    assert "NAPARI_SSL_AMP=0" in meta["description"] and "NAPARI_SSL_AMP=0" in (root / "docs" / "README.md").read_text()

    written = _monai_workflow(root, oblique_scan, tmp_path / "masks")
    assert written.same_geometry(io.read(oblique_scan), atol=1e-3)  # Invertd: back on the scan's grid
    voxels, dice = _agreement(written.array, native_masks)
    # the issue's target: >= 99.9 % of voxels, and the lesion's Dice near 1 (measured: 3 voxels of 616,000 differ,
    # Dice 0.992; 0.975 when the bundle used Spacingd, whose round((n - 1) s / t) + 1 voxels put the windows one
    # voxel off ours). The bundle resamples to our model grid; what is left is SimpleITK's float noise (~1e-14
    # instead of 0 at a few dozen voxels of the scan's zero background, which zscore_nonzero's mask then keeps)
    assert voxels >= 0.999 and dice >= 0.98, (voxels, dice)

    monkeypatch.setenv("NAPARI_SSL_AMP", "0")
    info = describe_segmenter(root)
    assert info.format == "monai-bundle" and info.names == {0: "background", 1: "lesion"}
    assert info.spacing == (2.5, 1.5, 1.5) and info.orientation == "LPS"
    ours = open_segmenter(info, device="cpu", trust=True).predict([io.read(oblique_scan)])
    voxels, dice = _agreement(ours.array, native_masks)
    assert voxels >= 0.999 and dice >= 0.98, (voxels, dice)


@pytest.mark.slow
def test_exported_bundle_reproduces_our_masks_on_a_real_mr(tmp_path, exported_bundle, shared_data) -> None:
    """mr_organs (3 mm voxels, upsampled to 1.5 x 1.5 x 2.5 mm): Spacingd would make 233 x 181 voxels where we make
    234 x 182, and SimpleITK leaves the last plane of each (beyond the scan's extent) 0, as the bundle now does."""
    scan = shared_data / "mr_organs" / "mr.nii.gz"
    native = _native(scan)
    written = _monai_workflow(exported_bundle, scan, tmp_path / "masks")
    assert written.same_geometry(io.read(scan), atol=1e-3)
    assert (native == 1).sum() > 1000  # the phantom's model draws on the MR: enough voxels to compare
    voxels, dice = _agreement(written.array, native)
    assert voxels >= 0.999 and dice >= 0.98, (voxels, dice)


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
