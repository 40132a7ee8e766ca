"""Defaults of a pretraining run: the batch (2 for the 3D pretexts; the imaging planes' 2D network takes as many plane
pixels per step as two 3D patches hold voxels; the user's batch always wins; the batch is recorded) and the pretext
options recorded in the checkpoint (every option as built, so a later change of a default keeps its task)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_ssl import checkpoint
from napari_ssl.io.volume import Volume
from napari_ssl.plan import DEFAULT_BATCH, fingerprint, make_plan
from napari_ssl.pretext import registry
from napari_ssl.training.pretrain import PretrainConfig, default_batch_size, make_pretext, pretrain


@pytest.mark.parametrize(("patch", "options"), [(48, {}), (96, {}), (32, {"n_stack": 4, "n_oblique": 2}),
                                                 (64, {"size": 32})])
def test_planes_batch_matches_the_voxels_of_two_3d_patches(patch: int, options: dict) -> None:
    task = make_pretext("planes", {**registry.get("planes").default_options(patch), **options})
    batch = registry.get("planes").default_batch(task, patch, DEFAULT_BATCH)
    pixels = (task.n_stack + task.n_oblique) * task.size[0] * task.size[1]  # one sample's planes
    voxels = DEFAULT_BATCH * patch**3
    assert batch > DEFAULT_BATCH
    assert abs(batch * pixels - voxels) <= pixels / 2  # the nearest whole batch
    assert default_batch_size({"planes": task}, patch) == batch


def test_3d_pretexts_and_combined_runs_keep_the_3d_batch() -> None:
    patch = 48
    tasks = {name: make_pretext(name, registry.get(name).default_options(patch)) for name in registry.names()[:4]}
    for name in ("rubik", "context", "genesis"):
        assert registry.get(name).batch is None
        assert default_batch_size({name: tasks[name]}, patch) == DEFAULT_BATCH
    assert default_batch_size({"context": tasks["context"], "planes": tasks["planes"]}, patch) == DEFAULT_BATCH
    # native 2D views (an exam) are not planes of the patch's size: the 3D default
    assert default_batch_size({"planes": tasks["planes"]}, patch, native=True) == DEFAULT_BATCH


def test_plan_takes_the_pretext_batch_unless_the_user_gives_one() -> None:
    scan = Volume(np.pad(np.ones((20, 24, 24), np.float32), 4), spacing=(2.0, 2.0, 2.0))
    fp = fingerprint([[scan]])
    plan = make_plan(fp, "cpu", default_batch=9)
    assert plan.batch_size == 9 and plan.sources["batch_size"] == "data"
    assert any("batch 9" in note for note in plan.notes)
    user = make_plan(fp, "cpu", batch_size=3, default_batch=9)
    assert user.batch_size == 3 and user.sources["batch_size"] == "user"
    assert not any("batch" in note for note in user.notes)
    assert make_plan(fp, "cpu").batch_size == DEFAULT_BATCH


def _run(tmp_path: Path, name: str, pretexts: tuple[str, ...], **changes) -> dict:
    rng = np.random.default_rng(0)
    head = np.zeros((24, 28, 28), np.float32)
    head[4:20, 5:23, 6:22] = 1 + rng.random((16, 18, 16), dtype=np.float32)
    values = {"pretexts": pretexts, "volumes": (Volume(head, spacing=(2.0, 2.0, 2.0)),), "out": str(tmp_path / name),
              "steps": 1, "patch_size": 32, "backbone": "tiny", "num_threads": 1, "num_workers": 0,
              "save_every": 0, "val_samples": 1}
    values.update(changes)
    list(pretrain(PretrainConfig(**values)))
    return checkpoint._read_meta(tmp_path / name)  # what the file records


def test_pretraining_uses_and_records_the_default_batch_and_the_user_wins(tmp_path: Path) -> None:
    assert PretrainConfig(pretexts=("planes",), data=("x",)).batch_size is None  # nothing fixed before the data
    planes = _run(tmp_path, "planes", ("planes",))
    expected = default_batch_size({"planes": make_pretext("planes", {"size": 32})}, 32)
    assert expected > DEFAULT_BATCH
    assert planes["training"]["batch_size"] == planes["plan"]["batch_size"] == expected
    assert planes["config"]["batch_size"] is None  # a resumed run resolves it again, the same way
    user = _run(tmp_path, "user", ("planes",), batch_size=3)
    assert user["training"]["batch_size"] == user["plan"]["batch_size"] == 3
    rubik = _run(tmp_path, "rubik", ("rubik",))
    assert rubik["training"]["batch_size"] == DEFAULT_BATCH
    # every option of the task as built is recorded (the user's one too), and rebuilds the same task
    for meta, name, given in ((planes, "planes", {"size": 32}), (rubik, "rubik", {})):
        options = meta["pretext_options"][name]
        assert set(options) == {p.name for p in registry.get(name).parameters}
        built = make_pretext(name, {**registry.get(name).default_options(32), **given})
        assert repr(make_pretext(name, options)) == repr(built)
    assert planes["pretext_options"]["planes"]["views"] == "anatomical" and planes["config"]["pretext_options"] == {}


def test_a_checkpoint_from_before_the_planes_line_head_resumes_with_its_own_head(tmp_path: Path) -> None:
    """A planes checkpoint written before the planes' head field ``head`` (its 1x1 output conv) resumes as that
    network, in the flat ``model`` dict of that time too."""
    import json

    import torch

    from napari_ssl.models import ModelSpec, PretrainModel

    first = _run(tmp_path, "old", ("planes",), batch_size=1)
    assert first["model"]["heads"]["planes"]["head"] == "conv"
    folder = tmp_path / "old"
    meta = json.loads((folder / "meta.json").read_text())
    fields = meta["model"].pop("heads")["planes"]
    meta["model"]["n_views"] = fields["n_views"]  # the flat dict written before the line head (and before heads)
    old_spec = ModelSpec.from_dict(meta["model"])
    assert old_spec.heads["planes"] == {"n_views": fields["n_views"], "head": "linear"}
    torch.manual_seed(0)
    old_model = PretrainModel(old_spec)
    optimizer = torch.optim.AdamW(old_model.parameters())
    checkpoint.save(folder, old_model.state_dict(), meta, {"optimizer": optimizer.state_dict()})
    resumed = _run(tmp_path, "old", ("planes",), batch_size=1, steps=2, resume=str(folder))
    assert resumed["step"] == 2 and resumed["model"]["heads"]["planes"]["head"] == "linear"
    state, _ = checkpoint.load(folder)
    assert "backbone2d.net.final_conv.weight" in state and not any(k.startswith("line_head") for k in state)


def test_a_resumed_run_keeps_its_checkpoints_pretext_options(tmp_path: Path) -> None:
    """Resume rebuilds the task from the options the checkpoint recorded, not from today's defaults."""
    first = _run(tmp_path, "run", ("planes",), batch_size=1, pretext_options={"planes": {"views": "random"}})
    assert first["pretext_options"]["planes"]["views"] == "random"
    resumed = _run(tmp_path, "run", ("planes",), batch_size=1, steps=2, resume=str(tmp_path / "run"))
    assert resumed["step"] == 2 and resumed["pretext_options"]["planes"]["views"] == "random"
    assert resumed["pretext_options"] == first["pretext_options"]


def test_started_event_tells_the_resolved_batch_also_without_a_plan(tmp_path: Path) -> None:
    """The Pretrain dock's samples/s -> steps/s (ETA) needs the batch actually used, also when no plan is made
    (the user fixed spacing and normalisation)."""
    from napari_ssl import events
    from napari_ssl.preprocess import Normalization

    head = np.pad(np.ones((16, 20, 20), np.float32), 4)
    config = PretrainConfig(pretexts=("planes",), volumes=(Volume(head, spacing=(2.0, 2.0, 2.0)),),
                            out=str(tmp_path / "ck"), steps=1, patch_size=32, backbone="tiny", num_threads=1,
                            num_workers=0, save_every=0, val_samples=1, spacing=(2.0, 2.0, 2.0),
                            normalization=Normalization(mode="zscore"))
    run = pretrain(config)
    try:
        started = next(e for e in run if isinstance(e, events.Started))
    finally:
        run.close()
    assert started.plan is None
    assert started.batch_size == default_batch_size({"planes": make_pretext("planes", {"size": 32})}, 32) > DEFAULT_BATCH
