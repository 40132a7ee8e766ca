"""The one training loop: a stub task with a known loss drives it; ``minutes`` stops and saves; the best held-out
weights are kept; sampled patches are forced onto the foreground a third of the time."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from napari_ssl import checkpoint, events
from napari_ssl.training.trainer import LoopSettings, train


class StubTask:
    """Fit ``w * x`` to ``2 * x``: loss ``(w - 2)^2 x^2`` goes down; validation scores ``-|w - 2|``."""

    kind = "segment"

    def __init__(self, pause: float = 0.0) -> None:
        self.pause = pause
        self.validations: list[int] = []

    def setup(self, trainer):
        self.trainer = trainer
        net = torch.nn.Linear(1, 1, bias=False)
        torch.nn.init.zeros_(net.weight)
        return net

    def param_groups(self, model):
        return [{"params": list(model.parameters())}]

    def batches(self, start_step):
        for _ in range(start_step, self.trainer.settings.steps):
            yield {"x": np.ones((4, 1), np.float32)}

    def losses(self, model, batch):
        time.sleep(self.pause)
        return {"loss": ((model(batch["x"]) - 2 * batch["x"]) ** 2).mean()}

    def validate(self, model):
        self.validations.append(self.trainer.step)
        return {"score": -abs(float(model.weight) - 2.0)}

    def meta(self):
        return {"config": {"task": "stub"}}


def test_a_stub_task_drives_the_loop_to_its_steps_and_checkpoints(tmp_path) -> None:
    task = StubTask()
    settings = LoopSettings(steps=40, out=str(tmp_path / "ck"), lr=0.2, schedule="poly", warmup=5, save_every=10,
                            val_every=20, device="cpu", num_threads=1, keep_best=True)
    seen = list(train(task, settings))
    progress = [e for e in seen if isinstance(e, events.Progress)]
    assert [e.step for e in progress] == list(range(1, 41))
    assert [e.step for e in seen if isinstance(e, events.Saved)] == [10, 20, 30, 40]
    assert [e.step for e in seen if isinstance(e, events.Validated)] == [20, 40] == task.validations
    assert progress[0].lr < progress[6].lr  # warm-up, then poly decay
    assert progress[-1].lr < 0.1 * settings.lr
    assert progress[-1].loss < 0.02 * progress[0].loss
    state, meta = checkpoint.load_weights(tmp_path / "ck"), checkpoint._read_meta(tmp_path / "ck")  # a stub task: no network in its meta
    assert meta["step"] == 40 and meta["config"]["task"] == "stub" and meta["kind"] == "segment"
    assert len(meta["history"]["loss"]) == 40 and meta["history"]["val_step"] == [20, 40]
    assert float(state["weight"]) == pytest.approx(2.0, abs=0.3)
    assert isinstance(seen[-1], events.Finished) and seen[-1].metrics["score"] > -0.3


def test_minutes_stops_the_run_and_saves_as_at_the_end(tmp_path) -> None:
    settings = LoopSettings(steps=100_000, out=str(tmp_path / "ck"), lr=0.01, schedule="poly", minutes=0.02,
                            device="cpu", num_threads=1)
    t0 = time.perf_counter()
    seen = list(train(StubTask(pause=0.02), settings))
    elapsed = time.perf_counter() - t0
    finished = seen[-1]
    assert isinstance(finished, events.Finished) and 5 < finished.step < 100_000
    assert elapsed < 30
    meta = checkpoint._read_meta(tmp_path / "ck")
    assert meta["step"] == finished.step and meta["training"]["stopped_by_time"] is True
    lrs = [e.lr for e in seen if isinstance(e, events.Progress)]
    assert lrs[-1] < 0.2 * settings.lr  # the schedule follows the time budget: annealed at the end


@pytest.mark.parametrize("keep_best", [True, False])
def test_the_best_or_the_last_held_out_weights_are_kept(tmp_path, keep_best) -> None:
    class Overshoot(StubTask):
        def losses(self, model, batch):  # after step 10 the target moves away from the validation's optimum
            target = 2.0 if self.trainer.step < 10 else 5.0
            return {"loss": ((model(batch["x"]) - target * batch["x"]) ** 2).mean()}

    settings = LoopSettings(steps=30, out=str(tmp_path / "ck"), lr=0.2, val_every=10, device="cpu", num_threads=1,
                            keep_best=keep_best)
    seen = list(train(Overshoot(), settings))
    state, meta = checkpoint.load_weights(tmp_path / "ck"), checkpoint._read_meta(tmp_path / "ck")
    scores = meta["history"]["val/score"]
    if keep_best:
        assert meta["training"]["best_step"] == 10
        assert float(state["weight"]) == pytest.approx(2.0, abs=0.3)
        assert seen[-1].metrics["score"] == pytest.approx(max(scores), abs=1e-5)
    else:  # the last weights, and the last validation's score with them
        assert meta["training"]["best_step"] is None
        assert float(state["weight"]) == pytest.approx(5.0, abs=0.5)
        assert seen[-1].metrics["score"] == pytest.approx(scores[-1], abs=1e-5)
        assert scores[-1] < max(scores)


def test_foreground_oversampling_is_a_third() -> None:
    """With a tiny foreground, patches centred on it come (almost) only from the forced third."""
    from napari_ssl.training.augment import Case, PatchSampler

    labels = np.zeros((40, 48, 48), np.uint8)
    labels[30:32, 40:42, 5:7] = 1  # 8 voxels in a corner: a random 16^3 patch rarely contains them
    image = np.random.default_rng(0).normal(size=(1, 40, 48, 48)).astype(np.float32)
    sampler = PatchSampler([Case("c", image, labels)], (16, 16, 16), n_classes=1, seed=0)
    rng = np.random.default_rng(1)
    draws = [sampler.sample(rng) for _ in range(300)]
    forced = np.mean([f for _, _, f in draws])
    with_fg = np.mean([y.any() for _, y, _ in draws])
    assert forced == pytest.approx(1 / 3, abs=0.1)
    assert with_fg == pytest.approx(1 / 3, abs=0.1)
    x, y, _ = draws[0]
    assert x.shape == (1, 16, 16, 16) and x.dtype == np.float32 and y.shape == (1, 16, 16, 16) and y.dtype == np.int64
    again = PatchSampler([Case("c", image, labels)], (16, 16, 16), n_classes=1, seed=0)
    np.testing.assert_array_equal(again.batch(3, 2)["image"], sampler.batch(3, 2)["image"])  # reproducible


def test_parallel_patch_threads_give_the_same_batches() -> None:
    """Beside a GPU several threads augment side by side; the batches of each step stay the same, in order."""
    import threading

    from napari_ssl.training.augment import Case, PatchSampler, loader_threads

    labels = np.zeros((24, 24, 24), np.uint8)
    labels[8:14, 6:12, 10:16] = 1
    image = np.random.default_rng(0).normal(size=(1, 24, 24, 24)).astype(np.float32)
    sampler = PatchSampler([Case("c", image, labels)], (16, 16, 16), n_classes=1, seed=0)
    serial = list(sampler.batches(0, 6, 2))
    parallel = list(sampler.batches(0, 6, 2, workers=3))
    assert len(parallel) == len(serial) == 6
    for a, b in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])
    it = sampler.batches(2, 10**6, 2, workers=3)  # closing early stops the threads
    next(it)
    it.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("napari-ssl-patches")]
    assert loader_threads("cpu", 16) == 1 and loader_threads("cuda", 16) == 8 and loader_threads("cuda", 2) == 1


def test_mirroring_is_off_for_lateralised_classes_and_named_anatomy() -> None:
    from napari_ssl.classes import lateralised, mirror_by_default, parse_classes

    assert lateralised(parse_classes("kidney_left=3,kidney_right=2"))
    assert not lateralised(parse_classes("whole_tumor=1+2+4,liver=5"))
    assert mirror_by_default(parse_classes("whole_tumor=1+2+4,tumor_core=1+4,enhancing=4"))
    assert mirror_by_default(parse_classes("1,2"))  # unnamed: nnU-Net's default
    assert not mirror_by_default(parse_classes("kidney_left=3"))
    assert not mirror_by_default(parse_classes("liver=5"))  # a mirrored liver sits where the spleen is
    assert not mirror_by_default(parse_classes("whole_tumor=1+2+4,liver=5"))


class ConvTask(StubTask):
    """A 3D convolution fitted to the identity: exercises the CPU's mixed-precision path."""

    cpu_bfloat16_ok = True

    def setup(self, trainer):
        self.trainer = trainer
        return torch.nn.Conv3d(2, 2, 3, padding=1)

    def batches(self, start_step):
        rng = np.random.default_rng(0)
        for _ in range(start_step, self.trainer.settings.steps):
            yield {"x": rng.normal(size=(2, 2, 8, 8, 8)).astype(np.float32)}

    def losses(self, model, batch):
        self.dtype = model(batch["x"]).dtype
        self.layout = batch["x"].is_contiguous(memory_format=torch.channels_last_3d)
        return {"loss": ((model(batch["x"]).float() - batch["x"]) ** 2).mean()}

    def validate(self, model):
        return {}


def test_cpu_mixed_precision_where_the_cpu_computes_bfloat16(tmp_path, monkeypatch) -> None:
    from napari_ssl.device import autocast_dtype

    native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert autocast_dtype("cpu") == (torch.bfloat16 if native else None)
    assert autocast_dtype("cpu", amp=False) is None
    monkeypatch.setenv("NAPARI_SSL_AMP", "0")
    assert autocast_dtype("cpu") is None
    monkeypatch.delenv("NAPARI_SSL_AMP")
    for amp in (True, False):
        task = ConvTask()
        seen = list(train(task, LoopSettings(steps=30, out=str(tmp_path / f"ck{amp}"), lr=0.05, device="cpu",
                                             num_threads=1, amp=amp)))
        losses = [e.loss for e in seen if isinstance(e, events.Progress)]
        assert losses[-1] < 0.5 * losses[0]  # learns in either precision
        use = amp and native
        assert task.dtype == (torch.bfloat16 if use else torch.float32)
        assert task.layout == use  # channels_last_3d goes with bfloat16 on a CPU
