"""Checkpoints: safetensors + meta.json, verified on load, atomic, never unpickling arbitrary objects."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from napari_ssl import checkpoint
from napari_ssl.checkpoint import CheckpointError


def _state(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "a.weight": torch.randn(4, 3, generator=g),
        "a.bias": torch.randn(4, generator=g),
        "n": torch.tensor(3),
    }


def test_round_trip(tmp_path: Path) -> None:
    opt = {
        "state": {0: {"step": torch.tensor(2.0), "exp_avg": torch.ones(3)}},
        "param_groups": [{"lr": 0.1, "betas": (0.9, 0.99), "params": [0], "foreach": None}],
    }
    path = checkpoint.save(
        tmp_path / "ck", _state(), {"step": 7, "config": {"spacing": (1.0, 2.0, 3.0)}}, opt
    )
    state, meta = checkpoint.load_weights(path), checkpoint._read_meta(path)
    assert meta["step"] == 7
    assert meta["config"]["spacing"] == [1.0, 2.0, 3.0]
    assert meta["versions"]["torch"] == torch.__version__.split("+")[0] or meta["versions"][
        "torch"
    ].startswith(torch.__version__.split("+")[0])
    for key, value in _state().items():
        torch.testing.assert_close(state[key], value)
    back = checkpoint.load_optimizer(path)
    assert back["param_groups"][0]["betas"] == (0.9, 0.99)
    torch.testing.assert_close(back["state"][0]["exp_avg"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # no temp or backup folders left


def test_overwrite_keeps_one_folder(tmp_path: Path) -> None:
    checkpoint.save(tmp_path / "ck", _state(0), {"step": 1})
    checkpoint.save(tmp_path / "ck", _state(1), {"step": 2})
    state, meta = checkpoint.load_weights(tmp_path / "ck"), checkpoint._read_meta(tmp_path / "ck")
    assert meta["step"] == 2
    torch.testing.assert_close(state["a.weight"], _state(1)["a.weight"])
    assert checkpoint.load_optimizer(tmp_path / "ck") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_truncated_file_is_detected_and_previous_survives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ck = tmp_path / "ck"
    checkpoint.save(ck, _state(0), {"step": 1})

    # a crash while writing the next checkpoint: the weights file is half written, then the process dies
    import safetensors.torch

    real = safetensors.torch.save_file

    def crash_mid_write(tensors, filename, metadata=None):
        real(tensors, filename, metadata)
        with open(filename, "r+b") as fh:
            fh.truncate(os.path.getsize(filename) // 2)
        raise KeyboardInterrupt  # the process is killed here

    monkeypatch.setattr(safetensors.torch, "save_file", crash_mid_write)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(ck, _state(1), {"step": 2})
    monkeypatch.undo()
    state, meta = checkpoint.load_weights(ck), checkpoint._read_meta(ck)  # the previous checkpoint is intact
    assert meta["step"] == 1
    torch.testing.assert_close(state["a.weight"], _state(0)["a.weight"])

    # a checkpoint whose weights file was truncated afterwards is refused with a clear error
    weights = ck / checkpoint.MODEL_FILE
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        checkpoint.load_weights(ck)


def test_crash_between_renames_falls_back_to_previous(tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    checkpoint.save(ck, _state(0), {"step": 1})
    os.replace(ck, tmp_path / ".ck.previous")  # the instant between the two renames of save()
    _, meta = checkpoint.load_weights(ck), checkpoint._read_meta(ck)
    assert meta["step"] == 1


def test_altered_weights_fail_checksum(tmp_path: Path) -> None:
    ck = checkpoint.save(tmp_path / "ck", _state(0), {"step": 1})
    weights = ck / checkpoint.MODEL_FILE
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        checkpoint.load_weights(ck)


class _Hostile:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def _rewrite_digest(folder: Path, name: str) -> None:
    """Make meta.json agree with a replaced file, so only the loader's own safety is tested."""
    meta = json.loads((folder / checkpoint.META_FILE).read_text())
    path = folder / name
    meta["files"][name] = {"size": path.stat().st_size, "sha256": checkpoint._sha256(path)}
    (folder / checkpoint.META_FILE).write_text(json.dumps(meta))


def test_hostile_optimizer_pickle_is_refused(tmp_path: Path) -> None:
    ck = checkpoint.save(tmp_path / "ck", _state(), {"step": 1}, {"state": {}, "param_groups": []})
    marker = tmp_path / "pwned.txt"
    torch.save({"state": _Hostile(str(marker))}, ck / checkpoint.OPTIMIZER_FILE)
    _rewrite_digest(ck, checkpoint.OPTIMIZER_FILE)
    with pytest.raises(CheckpointError, match="refused"):
        checkpoint.load_optimizer(ck)
    assert not marker.exists()


def test_hostile_weights_pickle_is_refused(tmp_path: Path) -> None:
    ck = checkpoint.save(tmp_path / "ck", _state(), {"step": 1})
    marker = tmp_path / "pwned.txt"
    (ck / checkpoint.MODEL_FILE).write_bytes(pickle.dumps(_Hostile(str(marker))))
    _rewrite_digest(ck, checkpoint.MODEL_FILE)
    with pytest.raises(CheckpointError, match="cannot read weights"):
        checkpoint.load_weights(ck)
    assert not marker.exists()


def test_not_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        checkpoint.load_weights(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a napari-ssl checkpoint"):
        checkpoint.load_weights(tmp_path / "empty")
    (tmp_path / "json").mkdir()
    (tmp_path / "json" / "meta.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt meta.json"):
        checkpoint.load_weights(tmp_path / "json")


def test_meta_must_be_json(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        checkpoint.save(tmp_path / "ck", _state(), {"bad": object()})
    assert not any(tmp_path.iterdir())  # the temporary folder was cleaned up


def test_refuses_to_replace_a_foreign_folder(tmp_path: Path) -> None:
    user = tmp_path / "documents"
    user.mkdir()
    (user / "thesis.txt").write_text("precious")
    with pytest.raises(CheckpointError, match="refusing to overwrite"):
        checkpoint.save(user, _state(), {"step": 1})
    assert (user / "thesis.txt").read_text() == "precious"
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="it is a file"):
        checkpoint.save(tmp_path / "file", _state(), {"step": 1})
    (tmp_path / "empty").mkdir()
    checkpoint.save(tmp_path / "empty", _state(), {"step": 1})  # an empty folder is fine
    assert checkpoint._read_meta(tmp_path / "empty")["step"] == 1  # the file layer (not a model checkpoint)
