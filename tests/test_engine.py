"""The pretraining engine: each pretext learns on a real CT, resume is exact, cancel saves, DataLoader workers draw
the samples, bad input fails early. Only the learning tests need the real scans (../shared/data); the others run on
a synthetic CT (:mod:`synthetic`), so a fresh clone runs them too."""

from __future__ import annotations

import os
import sys
import types
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic import write_ct

from napari_ssl import checkpoint, events
from napari_ssl.training.pretrain import PretrainConfig, finetune, pretrain


@pytest.fixture(scope="module")
def ct(tmp_path_factory) -> Path:
    """A folder holding one synthetic CT (48 x 64 x 64 voxels of 3 mm)."""
    folder = tmp_path_factory.mktemp("synthetic") / "ct"
    write_ct(folder)
    return folder


def _run(gen) -> list:
    """A run's events from Started on (the prepared dataset's Preparing events come first)."""
    return [e for e in gen if not isinstance(e, events.Preparing)]


def _start(gen):
    """The first event after the prepared dataset's build: where bad input has raised."""
    return next(e for e in gen if not isinstance(e, events.Preparing))


def _config(scans: Path, out: Path, **changes) -> PretrainConfig:
    """A tiny run on the scans of folder ``scans``."""
    values = {
        "pretexts": ("context",),
        "data": (str(scans),),
        "out": str(out),
        "steps": 6,
        "batch_size": 2,
        "patch_size": 32,
        "backbone": "tiny",
        "seed": 0,
        "num_threads": 1,
        "num_workers": 0,
        "save_every": 0,
        "val_samples": 2,
    }
    values.update(changes)
    return PretrainConfig(**values)


def _losses(config: PretrainConfig, key: str = "loss") -> tuple[np.ndarray, list]:
    seen = list(pretrain(config))
    progress = [e for e in seen if isinstance(e, events.Progress)]
    values = [e.loss if key == "loss" else e.losses[key] for e in progress]
    return np.asarray(values), seen


def _assert_learns(values: np.ndarray, factor: float) -> None:
    first, last = values[:10].mean(), values[-10:].mean()
    assert np.isfinite(values).all()
    assert last < factor * first, f"loss did not go down: first 10 steps {first:.4f}, last 10 {last:.4f}"


@pytest.mark.slow
def test_context_restoration_learns(shared_data: Path, tmp_path: Path) -> None:
    values, seen = _losses(_config(shared_data / "ct_unlabeled", tmp_path / "ck", steps=40, lr=3e-3))
    _assert_learns(values, 0.85)
    finished = seen[-1]
    assert isinstance(finished, events.Finished)
    assert {"context/psnr", "context/psnr_input", "context/psnr_gain"} <= set(finished.metrics)


@pytest.mark.slow
def test_rubik_learns(shared_data: Path, tmp_path: Path) -> None:
    # at 9 mm a 32^3 patch spans most of the body, so cube position and orientation are visible to a tiny net
    config = _config(
        shared_data / "ct_unlabeled",
        tmp_path / "ck",
        pretexts=("rubik",),
        spacing=(9.0, 9.0, 9.0),
        steps=80,
        batch_size=4,
        pretext_options={"rubik": {"n_permutations": 10, "gap": 2}},
    )
    values, seen = _losses(config, "rubik/perm")
    _assert_learns(values, 0.8)
    assert {"rubik/perm_top1", "rubik/rot_acc"} <= set(seen[-1].metrics)


@pytest.mark.slow
def test_rubik_learns_the_cube_order_of_held_out_heads(tmp_path: Path) -> None:
    """The cubes of the whole head (not of a random patch) tell where they came from: on a phantom never seen in
    training the permutation is found far above chance (cubes of random patches stayed at chance, 0.09)."""
    from napari_ssl.phantom import make_phantom
    from napari_ssl.study.score import score

    def head(seed: int):
        return make_phantom(shape=(40, 64, 64), spacing=(4.0, 3.0, 3.0), seed=seed)[0]

    config = _config(
        Path("unused"), tmp_path / "ck", pretexts=("rubik",), data=(), volumes=tuple(head(s) for s in range(3)),
        spacing=(4.0, 4.0, 4.0), steps=40, batch_size=4, lr=3e-3, val_samples=0, device="cpu",
        pretext_options={"rubik": {"n_permutations": 10, "gap": 2}},
    )
    values, _ = _losses(config, "rubik/perm")
    _assert_learns(values, 0.75)  # from ln(10) = 2.3
    result = score(tmp_path / "ck", [head(7)], samples=128, device="cpu")
    assert result["rubik/perm_top1"] >= 0.25, result  # chance: 0.1


@pytest.mark.slow
def test_planes_learns(shared_data: Path, tmp_path: Path) -> None:
    config = _config(
        shared_data / "ct_unlabeled",
        tmp_path / "ck",
        pretexts=("planes",),
        steps=30,
        lr=3e-3,
        pretext_options={"planes": {"n_stack": 4, "n_oblique": 2}},
    )
    values, _ = _losses(config)
    _assert_learns(values, 0.8)
    # on a held-out CT, the trained network beats its untrained copy on the same samples (31 vs 37 degrees,
    # positions 0.33 vs 0.72)
    from chance import untrained_copy

    from napari_ssl.study.score import score

    held_out = [shared_data / "ct_organs" / "ct.nii.gz"]
    trained = score(tmp_path / "ck", held_out, samples=32, device="cpu")
    untrained = score(untrained_copy(tmp_path / "ck", tmp_path / "untrained"), held_out, samples=32, device="cpu")
    assert trained["planes/angle_error_deg"] < untrained["planes/angle_error_deg"] - 2.0, (trained, untrained)
    assert trained["planes/position_mae"] < 0.75 * untrained["planes/position_mae"], (trained, untrained)


def test_combined_run_events_and_checkpoint(ct: Path, tmp_path: Path) -> None:
    config = _config(
        ct,
        tmp_path / "ck",
        pretexts=("rubik", "context", "planes"),
        steps=2,
        batch_size=1,
        save_every=1,
        weights={"rubik": 0.5, "planes": 2.0},
        pretext_options={"planes": {"n_stack": 2, "n_oblique": 1}},
    )
    seen = list(pretrain(config))
    kinds = [type(e).__name__ for e in seen]
    assert kinds[0] == "Preparing" and kinds.count("Preparing") == kinds.index("Started")  # the prepared dataset
    seen = seen[kinds.index("Started"):]
    kinds = [type(e).__name__ for e in seen]
    assert kinds == ["Started", "Progress", "Saved", "Progress", "Saved", "Finished"]
    progress = seen[1]
    expected = 0.5 * progress.losses["rubik"] + progress.losses["context"] + 2.0 * progress.losses["planes"]
    assert progress.loss == pytest.approx(expected, rel=1e-5)
    assert progress.samples_per_s > 0 and progress.lr == pytest.approx(1e-3)
    state, meta = checkpoint.load(tmp_path / "ck")
    assert meta.kind == "pretrain" and meta.step == 2 and meta.pretexts == ("rubik", "context", "planes")
    assert meta.normalization.mode == "ct_zscore"  # the plan: a CT, dataset z-score
    assert meta.plan.modality == "CT"
    assert meta.patch_size == (32, 32, 32)
    assert meta.backbones["3d"].size == "tiny" and meta.backbones["2d"].spatial_dims == 2
    assert len(meta.history["loss"]) == 2
    assert "torch" in meta.versions
    assert any(k.startswith("backbone3d.net.conv_0") for k in state)
    assert any(k.startswith("line_head.") for k in state)  # the planes draw their lines with the LineHead
    assert PretrainConfig.from_dict(meta.config) == config


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return checkpoint.load(path)[0]


@pytest.mark.slow
def test_resume_equals_uninterrupted(ct: Path, tmp_path: Path) -> None:
    n = 3
    # float32: bfloat16 CPU kernels are not bit-reproducible run to run (~1e-5), float32 ones are
    base = {"pretexts": ("rubik", "context"), "steps": 2 * n, "pretext_options": {"rubik": {"gap": 2}}, "amp": False}
    list(pretrain(_config(ct, tmp_path / "full", **base)))

    # the same 2N-step run, stopped (generator closed) after N steps, then resumed to 2N
    gen = pretrain(_config(ct, tmp_path / "part", **base))
    for event in gen:
        if isinstance(event, events.Progress) and event.step == n:
            break
    gen.close()
    assert checkpoint.open_checkpoint(tmp_path / "part").step == n
    # backbone and patch size left open: the checkpoint's are used
    resumed = _run(
        pretrain(
            _config(
                ct,
                tmp_path / "part",
                resume=str(tmp_path / "part"),
                backbone=None,
                patch_size=None,
                **base,
            )
        )
    )
    assert resumed[0].start_step == n
    assert [e.step for e in resumed if isinstance(e, events.Progress)] == list(range(n + 1, 2 * n + 1))

    full, part = _weights(tmp_path / "full"), _weights(tmp_path / "part")
    assert full.keys() == part.keys()
    for key in full:
        torch.testing.assert_close(part[key], full[key], rtol=1e-5, atol=1e-6, msg=key)
    meta_full, meta_part = checkpoint.open_checkpoint(tmp_path / "full"), checkpoint.open_checkpoint(tmp_path / "part")
    np.testing.assert_allclose(meta_part.history["loss"], meta_full.history["loss"], rtol=1e-4)


def test_cancel_mid_run_saves_a_checkpoint_that_loads(ct: Path, tmp_path: Path) -> None:
    out = tmp_path / "ck"
    gen = pretrain(_config(ct, out, steps=1000, batch_size=1))
    for event in gen:
        if isinstance(event, events.Progress) and event.step == 2:
            break
    assert not out.exists()  # nothing saved yet (save_every=0)
    gen.close()
    state, meta = checkpoint.load(out)
    assert meta.step == 2 and meta.total == 1000
    assert checkpoint.load_optimizer(out) is not None
    from napari_ssl.models import PretrainModel

    model = PretrainModel(meta.model_spec())
    model.load_state_dict(state)  # strict: the checkpoint rebuilds the network exactly


def test_in_memory_volumes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = (
        rng.normal(size=(36, 40, 40)).astype(np.float32),
        rng.normal(size=(34, 34, 50)).astype(np.float32),
    )
    config = PretrainConfig(
        pretexts=("context",),
        volumes=arrays,
        out=str(tmp_path / "ck"),
        steps=1,
        batch_size=1,
        patch_size=32,
        backbone="tiny",
        num_threads=1,
        num_workers=0,
        val_samples=1,
    )
    seen = _run(pretrain(config))
    assert seen[0].n_train == 1 and seen[0].n_val == 1
    assert "volumes" not in checkpoint.open_checkpoint(tmp_path / "ck").config


def test_dataloader_workers_draw_the_training_samples(ct: Path, tmp_path: Path, monkeypatch) -> None:
    """With ``num_workers=2`` every training sample is drawn in a DataLoader worker process, the batches dealt to
    the two workers in turn (seen through a side channel: each draw leaves a file naming its process and worker)."""
    import multiprocessing

    from napari_ssl.training.data import PretextDataset

    if multiprocessing.get_start_method() != "fork":
        pytest.skip("DataLoader workers are not forked here: the recording patch would not reach them")
    draws = tmp_path / "draws"
    draws.mkdir()
    draw = PretextDataset.__getitem__

    def recording(self, index: int):
        info = torch.utils.data.get_worker_info()
        worker = "main" if info is None else f"{info.id}of{info.num_workers}"
        (draws / f"{self.seed}-{index}-{os.getpid()}-{worker}").touch()
        return draw(self, index)

    monkeypatch.setattr(PretextDataset, "__getitem__", recording)
    seen = list(pretrain(_config(ct, tmp_path / "ck", steps=4, batch_size=1, num_workers=2)))
    assert [e.step for e in seen if isinstance(e, events.Progress)] == [1, 2, 3, 4]
    assert isinstance(seen[-1], events.Finished)
    records = [name.split("-") for name in sorted(p.name for p in draws.iterdir())]
    train = sorted((int(index), int(pid), worker) for seed, index, pid, worker in records
                   if seed == "0" and worker != "main")  # seed 0: the training stream (validation: its own)
    assert [index for index, _, _ in train] == [0, 1, 2, 3], records  # one draw per step, none lost or repeated
    assert [worker for _, _, worker in train] == ["0of2", "1of2", "0of2", "1of2"], records
    pids = {pid for _, pid, _ in train}
    assert len(pids) == 2 and os.getpid() not in pids  # two worker processes, not this one


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        ({"pretexts": ("jigsaw",)}, ValueError, "pretext must be"),
        ({"steps": 0}, ValueError, "steps must be >= 1"),
        ({"patch_size": 24}, ValueError, "patch_size must be a multiple of 16"),
        ({"patch_size": 16}, ValueError, "one voxel at the U-Net's bottleneck"),
        ({"backbone": "huge"}, ValueError, "backbone must be one of"),
        ({"weights": {"rubik": 1.0}}, ValueError, "weights given for pretexts not in the run"),
        ({"data": ()}, ValueError, "no data"),
    ],
)
def test_bad_config(tmp_path: Path, changes, error, match) -> None:
    with pytest.raises(error, match=match):
        _config(tmp_path, tmp_path / "ck", **changes)


def test_bad_data_fails_before_training(ct: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        _start(pretrain(_config(ct, tmp_path / "ck", data=(str(tmp_path / "missing"),))))
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"not a scan at all")
    with pytest.raises(OSError, match="broken.nii.gz"):
        _start(pretrain(_config(ct, tmp_path / "ck", data=(str(bad),))))
    with pytest.raises(ValueError, match="bad options for pretext 'context'"):
        _start(pretrain(_config(ct, tmp_path / "ck", pretext_options={"context": {"nope": 1}})))
    assert not (tmp_path / "ck").exists()


def test_resume_checks(ct: Path, tmp_path: Path) -> None:
    out = tmp_path / "ck"
    list(pretrain(_config(ct, out, steps=1, batch_size=1)))
    with pytest.raises(ValueError, match="already at step 1"):
        _start(pretrain(_config(ct, out, steps=1, resume=str(out))))
    with pytest.raises(ValueError, match="different network"):
        _start(pretrain(_config(ct, out, steps=3, resume=str(out), pretexts=("context", "rubik"))))


def test_finetune_is_a_lazy_wrapper(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("napari_ssl.training.finetune")
    fake.finetune = lambda config: iter([events.Finished(step=config, metrics={"dice": 0.5})])
    monkeypatch.setitem(sys.modules, "napari_ssl.training.finetune", fake)
    assert list(finetune(3)) == [events.Finished(step=3, metrics={"dice": 0.5})]


def test_config_round_trip(tmp_path: Path) -> None:
    config = PretrainConfig(pretexts="rubik,context", data=("a", "b"), spacing=(1, 2, 3), steps=5)
    assert config.pretexts == ("rubik", "context")
    again = PretrainConfig.from_dict(config.to_dict())
    assert again == config
    assert replace(config, steps=7).steps == 7
    with pytest.raises(ValueError, match="unknown config keys: colour"):
        PretrainConfig.from_dict({**config.to_dict(), "colour": 1})


def test_device_discovery() -> None:
    from napari_ssl import device

    names = device.available_devices()
    assert names[0] == "auto" and names[-1] == "cpu"
    auto = device.resolve_device("auto")
    expected = "cuda" if torch.cuda.is_available() else ("mps" if "mps" in names else "cpu")
    assert auto.type == expected
    assert device.resolve_device("CPU").type == "cpu"
    with pytest.raises(ValueError, match="not available"):
        device.resolve_device("cuda:99")
    with pytest.raises(ValueError, match="unknown device|unsupported device"):
        device.resolve_device("abacus")
    assert device.default_backbone("cpu") == "small" and device.default_patch_size("cpu") == 48
    assert device.default_backbone("cuda") == "large"
    assert 1 <= device.default_num_threads() <= (os.cpu_count() or 1)
    assert device.describe_device("cpu").startswith("cpu (")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_mixed_precision_and_channels_last(ct: Path, tmp_path: Path) -> None:
    config = _config(ct, tmp_path / "ck", device="cuda", steps=3, channels_last=True, batch_size=2)
    seen = _run(pretrain(config))
    assert seen[0].device.startswith("cuda:0")
    assert all(np.isfinite(e.loss) for e in seen if isinstance(e, events.Progress))
    state, meta = checkpoint.load(tmp_path / "ck")
    assert meta.device.startswith("cuda") and all(
        v.dtype == torch.float32 for v in state.values() if v.is_floating_point()
    )


def test_config_and_events_import_neither_torch_nor_monai() -> None:
    """The GUI builds configs and reads events in the viewer's process: that must stay light."""
    import subprocess

    code = (
        "import sys\n"
        "from napari_ssl.training.pretrain import PretrainConfig\n"
        "from napari_ssl import events, runner, device, checkpoint\n"
        "from napari_ssl.training import data\n"
        "import napari_ssl.commands.pretrain\n"
        "from napari_ssl.models.sizes import SIZES\n"
        "PretrainConfig(pretexts='rubik,planes', data=('x',), backbone='tiny')\n"
        "heavy = [m for m in ('torch', 'monai') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo, timeout=120)
    assert proc.returncode == 0, proc.stderr
