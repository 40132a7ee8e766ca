"""The pretext registry: records, lookup, registration; a toy pretext added through the registry alone trains and
scores; no pretext names left in the engine or the docks."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import toy_pretext
from toy_pretext import FLIP

from napari_ssl.pretext import registry
from napari_ssl.pretext.registry import ExplorerSpec, PretextSpec

REPO = Path(__file__).resolve().parents[1]
BUILTINS = ("rubik", "context", "planes", "genesis")


def test_builtins_registered_with_their_records() -> None:
    assert registry.names()[:4] == BUILTINS
    for name in BUILTINS:
        spec = registry.get(name)
        assert spec.name == name and spec.label and spec.colour.startswith("#")
        assert spec.metrics and all(m.startswith(f"{name}/") for m in spec.metrics)
        cls = spec.task_class()
        assert all(hasattr(cls, attr) for attr in ("sample", "apply", "targets", "overlay", "PARAMETERS"))
        assert spec.parameters == cls.PARAMETERS
    assert registry.get("genesis").metrics[0] == "genesis/psnr_gain"
    assert registry.get("context").metrics[0] == "context/psnr_gain"
    assert len({s.colour for s in registry.specs()}) == len(registry.specs())  # one colour each
    assert registry.get(" Genesis ").name == "genesis"
    with pytest.raises(ValueError, match=r"unknown pretext 'jigsaw'; choose one of \[.*'genesis'.*\]"):
        registry.get("jigsaw")


def test_default_options_follow_the_patch() -> None:
    assert registry.get("context").default_options(48) == {"patch_size": 8}
    assert registry.get("planes").default_options(32) == {"size": 32}
    assert registry.get("genesis").default_options(32) == {}
    with pytest.raises(ValueError, match="bad options for pretext 'genesis'"):
        registry.get("genesis").make({"no_such_option": 1})


def test_spec_validation() -> None:
    base = {"label": "x", "colour": "#000000", "task": "a:b", "adapter": "a:b", "hooks": "a:b"}
    with pytest.raises(ValueError, match="lower-case letters"):
        PretextSpec(name="Bad Name", **base)
    with pytest.raises(ValueError, match="colour must be"):
        PretextSpec(name="ok", **{**base, "colour": "red"})
    with pytest.raises(ValueError, match="backbone must be one of"):
        PretextSpec(name="ok", backbone="4d", **base)
    with pytest.raises(ValueError, match="must start with 'ok/'"):
        PretextSpec(name="ok", metrics=("other/psnr",), **base)
    with pytest.raises(ValueError, match="step_param"):
        ExplorerSpec(step="swap")
    with pytest.raises(ValueError, match="package.module:attribute"):
        registry.resolve("no_colon")


def test_register_and_unregister() -> None:
    assert "flip" not in registry.names()
    with toy_pretext.registered():
        assert registry.names()[-1] == "flip" and registry.labels()["flip"] == "Flip (toy)"
        with pytest.raises(ValueError, match="already registered"):
            registry.register(PretextSpec(name="flip", label="other", colour="#000000", task=object,
                                          adapter=object, hooks=object))
        from napari_ssl.training.config import PRETEXT_NAMES, PretrainConfig

        assert "flip" in PRETEXT_NAMES
        assert PretrainConfig(pretexts="flip,context", data=("x",)).pretexts == ("flip", "context")
    assert "flip" not in registry.names()
    from napari_ssl.training.config import PretrainConfig

    with pytest.raises(ValueError, match="pretext must be distinct names among"):
        PretrainConfig(pretexts="flip", data=("x",))
    with pytest.raises(ValueError, match="register takes a PretextSpec"):
        registry.register("flip")  # type: ignore[arg-type]


def test_no_pretext_names_in_engine_or_docks() -> None:
    """The engine and the docks learn pretexts from the registry: none of them names one."""
    names = "|".join(BUILTINS)
    pattern = re.compile(rf"""["']({names})["']""")
    files = [REPO / "napari_ssl" / "training" / "pretrain.py", REPO / "napari_ssl" / "training" / "data.py",
             REPO / "napari_ssl" / "study" / "score.py",
             REPO / "napari_ssl" / "models" / "pretrain.py", REPO / "napari_ssl" / "commands" / "pretrain.py"]
    # the docks; explorer/planes.py is the planes' own drawing code, named by their registry record
    files += [f for f in sorted((REPO / "napari_ssl" / "_napari").rglob("*.py"))
              if f.relative_to(REPO / "napari_ssl" / "_napari").as_posix() != "explorer/planes.py"]
    found = [f"{f.name}:{i}: {line.strip()}" for f in files
             for i, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1)
             if pattern.search(line) and "doctest" not in line and not line.lstrip().startswith(("#", '"""', "``"))]
    assert not found, "pretext names hard-coded:\n" + "\n".join(found)


def test_import_stays_light() -> None:
    code = ("import sys\nfrom napari_ssl.pretext import registry\nregistry.names()\n"
            "[s.task_class() for s in registry.specs()]\n"
            "heavy = [m for m in ('torch', 'monai', 'qtpy') if m in sys.modules]\nassert not heavy, heavy\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_toy_task_contract() -> None:
    task = FLIP.make({"p_flip": 1.0})
    x = np.arange(4 * 5 * 6, dtype=np.float32).reshape(1, 4, 5, 6)
    params = task.sample((4, 5, 6), 0)
    assert params.axes == (True, True, True)
    np.testing.assert_array_equal(task.apply(x, params), x[:, ::-1, ::-1, ::-1])
    np.testing.assert_array_equal(task.invert(task.apply(x, params), params), x)


def test_toy_pretext_trains_and_scores(tmp_path: Path, capsys) -> None:
    """Registered in this module only: the engine trains it, the checkpoint scores it. Every axis mirrored
    (``p_flip`` 1) is an answer three steps learn; the checkpoint keeps the option, so ``score`` draws its held-out
    samples the same way, and the network's untrained copy, scored on them, does not know the answer."""
    from chance import untrained_copy

    from napari_ssl import events
    from napari_ssl.cli import main
    from napari_ssl.training.pretrain import PretrainConfig, pretrain

    rng = np.random.default_rng(0)
    scans = tuple(rng.normal(size=(34, 34, 34)).astype(np.float32) for _ in range(2))
    with toy_pretext.registered():
        config = PretrainConfig(pretexts=("flip",), volumes=scans, out=str(tmp_path / "ck"), steps=3, batch_size=2,
                                patch_size=32, backbone="tiny", num_threads=1, num_workers=0, val_samples=2,
                                save_every=0, foreground=False, device="cpu", lr=0.05,
                                pretext_options={"flip": {"p_flip": 1.0}})
        seen = list(pretrain(config))
        progress = [e for e in seen if isinstance(e, events.Progress)]
        assert len(progress) == 3 and all(np.isfinite(e.losses["flip"]) for e in progress)
        assert progress[-1].losses["flip"] < progress[0].losses["flip"]
        finished = seen[-1]
        assert isinstance(finished, events.Finished) and finished.metrics["flip/axis_acc"] == 1.0, finished.metrics
        from napari_ssl import checkpoint, io
        from napari_ssl.io.volume import Volume

        meta = checkpoint.open_checkpoint(tmp_path / "ck")
        assert meta.pretexts == ("flip",) and meta.prefixes == {"3d": "backbone3d."}
        assert meta.pretext_options == {"flip": {"p_flip": 1.0}}
        state, _ = checkpoint.load(tmp_path / "ck")
        assert any(k.startswith("flip_head.") for k in state)
        scan = io.write(Volume(rng.normal(size=(36, 36, 36)).astype(np.float32)), tmp_path / "held_out.nii.gz")
        scores = {}
        for name, model in (("trained", tmp_path / "ck"), ("untrained", untrained_copy(tmp_path / "ck", tmp_path / "u"))):
            capsys.readouterr()
            assert main(["score", "--model", str(model), "--data", str(scan), "--samples", "3", "--device", "cpu"]) == 0
            scores[name] = json.loads(capsys.readouterr().out.strip())
        assert set(scores["trained"]) == {"flip/axis_acc"}
        assert scores["trained"]["flip/axis_acc"] == 1.0 > scores["untrained"]["flip/axis_acc"], scores


def test_a_pretext_is_one_module_and_no_registry_edit(tmp_path: Path, monkeypatch, capsys) -> None:
    """Adding a pretext touches one file: the toy pretext written as a module with a ``SPEC``, in a folder on
    ``napari_ssl.pretext.__path__``, is found by the registry (nothing registers it, no list names it), listed after
    the built-ins, trains for two steps and scores."""
    import napari_ssl.pretext
    from napari_ssl import events
    from napari_ssl.cli import main
    from napari_ssl.training.pretrain import PretrainConfig, pretrain

    unit = tmp_path / "units"
    unit.mkdir()
    source = (Path(__file__).parent / "toy_pretext.py").read_text(encoding="utf-8")
    (unit / "flipunit.py").write_text(source + "\n\nSPEC = FLIP\n", encoding="utf-8")
    monkeypatch.setattr(napari_ssl.pretext, "__path__", [*napari_ssl.pretext.__path__, str(unit)])
    monkeypatch.setattr(registry, "_REGISTRY", {})
    monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.delitem(sys.modules, "napari_ssl.pretext.flipunit", raising=False)
    before = {p: p.stat().st_mtime_ns for p in (REPO / "napari_ssl").rglob("*.py")}
    assert registry.names() == (*BUILTINS, "flip")
    assert registry.get("flip").task_class().__module__ == "napari_ssl.pretext.flipunit"
    rng = np.random.default_rng(0)
    scans = tuple(rng.normal(size=(34, 34, 34)).astype(np.float32) for _ in range(2))
    config = PretrainConfig(pretexts=("flip",), volumes=scans, out=str(tmp_path / "ck"), steps=2, batch_size=2,
                            patch_size=32, backbone="tiny", num_threads=1, num_workers=0, val_samples=2,
                            save_every=0, foreground=False, device="cpu", lr=0.05)
    seen = list(pretrain(config))
    assert sum(isinstance(e, events.Progress) for e in seen) == 2
    assert isinstance(seen[-1], events.Finished) and "flip/axis_acc" in seen[-1].metrics
    from napari_ssl import io
    from napari_ssl.io.volume import Volume

    scan = io.write(Volume(rng.normal(size=(36, 36, 36)).astype(np.float32)), tmp_path / "held_out.nii.gz")
    capsys.readouterr()
    assert main(["score", "--model", str(tmp_path / "ck"), "--data", str(scan), "--samples", "2",
                 "--device", "cpu"]) == 0
    assert set(json.loads(capsys.readouterr().out.strip())) == {"flip/axis_acc"}
    assert {p: p.stat().st_mtime_ns for p in (REPO / "napari_ssl").rglob("*.py")} == before  # no other file


def test_relative_references_resolve_against_the_unit() -> None:
    spec = registry.get("genesis")
    assert spec.module == "napari_ssl.pretext.genesis"
    assert spec.task == "napari_ssl.pretext.genesis.task:ModelsGenesis"
    assert spec.make_adapter(spec.make()).__class__.__name__ == "GenesisAdapter"
    with pytest.raises(ValueError, match="needs the spec's module"):
        PretextSpec(name="ok", label="x", colour="#000000", task=".task:T", adapter="a:b", hooks="a:b")
    with pytest.raises(ValueError, match="package.module:attribute"):
        registry.resolve(".task:T")


def test_backbones_prefixes_and_decoder_transfer_follow_the_records() -> None:
    from napari_ssl.models.pretrain import backbone_prefixes, has_decoder

    assert has_decoder(["genesis"]) and has_decoder(["context", "genesis"]) and not has_decoder(["rubik", "planes"])
    assert not has_decoder(["rubik", "context"])  # a residual restoration decoder does not transfer
    assert has_decoder(["planes"], "2d") and not has_decoder(["planes"])
    assert backbone_prefixes(["genesis"]) == {"3d": "backbone3d."}
    assert backbone_prefixes(["planes"]) == {"2d": "backbone2d."}
    with toy_pretext.registered():
        assert not has_decoder(["flip"]) and backbone_prefixes(["flip"]) == {"3d": "backbone3d."}


def test_answer_specs_of_the_builtins() -> None:
    """Every built-in pretext says how the explorer shows its network's answer; the core parts resolve."""
    from napari_ssl.pretext.registry import AnswerSpec

    for name in BUILTINS:
        spec = registry.get(name).explorer.answer
        assert isinstance(spec, AnswerSpec), name
        assert callable(registry.resolve(spec.compute)) and callable(registry.resolve(spec.describe))
    assert registry.get("context").explorer.mm_params == ("patch_size",)
    assert registry.get("context").explorer.answer.at_step is not None
    with pytest.raises(ValueError, match="text_position"):
        AnswerSpec(compute=len, describe=len, draw=len, canvas=len, text_position="middle")
    with pytest.raises(ValueError, match="AnswerSpec"):
        ExplorerSpec(answer="napari_ssl.pretext._restoration.answer:answer_restoration")
