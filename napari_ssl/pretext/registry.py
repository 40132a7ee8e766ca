"""One registry of pretext tasks: everything the engine, the data pipeline, the network, ``score``, the CLI and the
docks need to know about a pretext, declared once in a :class:`PretextSpec`.

A pretext is one unit: a module or subpackage directly in :mod:`napari_ssl.pretext` that declares
``SPEC = PretextSpec(...)``. On first use the registry imports every such module whose name does not start with
``_`` (it walks ``napari_ssl.pretext.__path__``) and registers its ``SPEC``, in the order of
:attr:`PretextSpec.order`: adding a pretext is adding one module, with no list to edit. Other code (a plugin, a
test) calls :func:`register`. Installed packages can also add pretexts through the ``napari_ssl.pretexts``
entry-point group (each entry point names a ``PretextSpec``), which makes them visible to the training child
processes too.

>>> from napari_ssl.pretext import registry
>>> registry.names()                                  # doctest: +SKIP
('rubik', 'context', 'planes', 'genesis')
>>> registry.get("genesis").label                     # doctest: +SKIP
'Models Genesis'

Importing this module does not import torch: the task class, the data adapter, the network hooks and the
explorer preview are named as ``"module:attribute"`` strings (or given as objects) and resolved on first use; a
unit names its own parts relative to itself (``".network:Hooks"``, with ``module=__name__``), so importing the
unit stays light too.

The network hooks (``PretextSpec.hooks``) are an object with these attributes and methods, all used with torch loaded
(:class:`napari_ssl.models.hooks.Hooks` gives the defaults):

- ``FIELDS`` (optional): its head fields in :attr:`~napari_ssl.models.pretrain.ModelSpec.heads` and their defaults
  (``LEGACY``: their values in checkpoints written before them; ``CHOICES``: the ones a resumed run keeps; ``FLAT``:
  where the flat ``meta.json`` of old kept them);
- ``model_fields(task, probe) -> dict``: head fields this pretext reads from its task object and one sample of the
  dataset, e.g. Rubik's cube shape;
- ``check(spec)``: raise ``ValueError`` for head fields (``spec.heads[name]``) this pretext cannot use;
- ``out_channels(spec)`` (optional): channels of its backbone's output convolution (``None``: the image channels);
- ``build(model)``: add its heads to the :class:`~napari_ssl.models.pretrain.PretrainModel` (``model.spec`` is the
  ModelSpec; ``model.backbone3d`` / ``model.backbone2d`` exist as ``backbone`` asks);
- ``forward(model, batch) -> dict`` of outputs keyed ``"<name>.<what>"``;
- ``losses(model, out, batch) -> dict`` with the key ``name`` (its total loss) and optional ``"name/part"`` keys;
- ``metrics(out, batch) -> dict`` of floats keyed ``"name/metric"`` (what ``napari-ssl score`` prints).
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = [
    "AnswerSpec",
    "ExplorerSpec",
    "PretextSpec",
    "get",
    "labels",
    "names",
    "register",
    "resolve",
    "specs",
    "units",
    "unregister",
]

#: the package whose units (non-underscore modules and subpackages with a ``SPEC``) are the built-in pretexts
UNITS = "napari_ssl.pretext"
#: entry-point group through which installed packages add pretexts
ENTRY_POINT_GROUP = "napari_ssl.pretexts"
#: where a pretext's network lives: the 3D encoder only, the whole 3D U-Net, or the 2D U-Net
BACKBONES = ("3d-encoder", "3d", "2d")


def resolve(ref: Any) -> Any:
    """The object named by ``"package.module:attribute"`` (imported now); any other value as given."""
    if not isinstance(ref, str):
        return ref
    module, sep, attr = ref.partition(":")
    if not sep or not module or not attr or module.startswith("."):
        raise ValueError(f"a reference must read 'package.module:attribute', got {ref!r}")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _absolute(ref: Any, package: str) -> Any:
    """``ref`` with a relative module (``".network:Hooks"``) made absolute against ``package``; others as given."""
    if not isinstance(ref, str) or not ref.startswith("."):
        return ref
    if not package:
        raise ValueError(f"the relative reference {ref!r} needs the spec's module (module=__name__)")
    module, sep, attr = ref.partition(":")
    return f"{importlib.util.resolve_name(module, package)}{sep}{attr}"


#: where the explorer writes an answer's words on the canvas (napari's text-overlay positions)
TEXT_POSITIONS = ("top_left", "top_center", "top_right", "bottom_left", "bottom_center", "bottom_right")


@dataclass(frozen=True)
class AnswerSpec:
    """How the Pretext explorer shows what a pretraining network answers on the previewed sample (its
    "network" picker). The callables are ``"module:attribute"`` strings (or objects), resolved on use.

    Parameters
    ----------
    compute : str or callable
        ``compute(network, volume, task, params, name) -> dict`` (no Qt; runs in a worker thread): the network
        of a :class:`~napari_ssl.training.pretrained.PretrainedNetwork` on the sample ``task.apply(volume, params)``, the
        pretext registered as ``name``; ``ValueError`` with one sentence for a network or parameters it cannot
        answer (see :mod:`napari_ssl.study.answers`; e.g. :mod:`napari_ssl.pretext.rubik.answer`).
    describe : str or callable
        ``describe(result, label) -> str``: one sentence on ``compute``'s result (the explorer's status line).
    draw : str or callable
        ``draw(viewer, answer, source_layer) -> list of (name, layer_type, data, kwargs, role)`` (GUI thread;
        ``answer`` is the dock's answer on one preview: ``preview``, ``path``, ``result``): the layers to show, in
        plain data (no napari import; a napari object described as :mod:`napari_ssl.pretext._explore` says).
    canvas : str or callable
        ``canvas(answer, label) -> str``: the lines written on the canvas.
    at_step : str or callable, optional
        ``at_step(params, step) -> params``: the params the step slider shows (the network answers on what is
        shown); ``None``: the whole sample.
    text_position : str
        Where the canvas text goes (clear of the pretext's drawing), one of :data:`TEXT_POSITIONS`.
    """

    compute: Any
    describe: Any
    draw: Any
    canvas: Any
    at_step: Any = None
    text_position: str = "top_left"

    def __post_init__(self) -> None:
        if self.text_position not in TEXT_POSITIONS:
            raise ValueError(f"text_position must be one of {TEXT_POSITIONS}, got {self.text_position!r}")


@dataclass(frozen=True)
class ExplorerSpec:
    """How the Pretext explorer shows a pretext (plain flags, no Qt).

    Parameters
    ----------
    preview : str or callable, optional
        ``compute(request, task, rng) -> Preview`` (see :mod:`napari_ssl.pretext._explore`); ``None``
        uses the generic preview: ``task.apply`` on the scan and the boxes of ``task.overlay(params)["boxes"]``
        (``(n, 2, 3)`` start / stop voxel corners) outlined, with ``task.describe(params)`` as the summary.
    restore : bool
        Offer the "show restored" check box (the task has ``invert``).
    step : str or None
        Offer a step slider named so (``"swap"``: the volume after the first k corruptions, counted by the
        parameter ``step_param``; ``"plane"``: one slider position per drawn plane).
    step_param : str or None
        The parameter that counts the steps of a ``"swap"`` slider.
    planes : bool
        The preview is a set of imaging planes (drawn as planes; "All views" of native acquisitions allowed).
    answer : AnswerSpec, optional
        What a pretraining network answers on the preview and how it is drawn; ``None``: the explorer says this
        pretext has no network answer view.
    mm_params : tuple of str
        Lengths in voxels that "Use its parameters" turns into mm with the checkpoint's voxel spacing (the task
        has a ``unit`` parameter, ``"voxel"`` or ``"mm"``), so the same patches show on a scan of another grid.
    """

    preview: Any = None
    restore: bool = False
    step: str | None = None
    step_param: str | None = None
    planes: bool = False
    answer: AnswerSpec | None = None
    mm_params: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.step not in (None, "swap", "plane"):
            raise ValueError(f"step must be None, 'swap' or 'plane', got {self.step!r}")
        if self.step == "swap" and not self.step_param:
            raise ValueError("a 'swap' step slider needs step_param, the parameter that counts the steps")
        if self.answer is not None and not isinstance(self.answer, AnswerSpec):
            raise ValueError(f"answer must be an AnswerSpec or None, got {type(self.answer).__name__}")
        object.__setattr__(self, "mm_params", tuple(self.mm_params))


@dataclass(frozen=True)
class PretextSpec:
    """Everything about one pretext task, declared once.

    Parameters
    ----------
    name : str
        Key used everywhere (config, CLI ``--pretext``, checkpoint meta, batch keys ``"<name>.<what>"``,
        metric keys ``"<name>/<metric>"``): lower-case letters, digits and ``_``.
    label : str
        Words for the GUI (``"Context restoration"``).
    colour : str
        ``#rrggbb`` of its loss curve.
    task : str or type
        The task class (``sample`` / ``apply`` / ``targets`` / ``overlay`` / optional ``invert``; ``PARAMETERS``,
        a tuple of :class:`~napari_ssl.pretext._base.ParamSpec`, lists its constructor parameters).
    adapter : str or callable
        ``adapter(task)`` -> a callable ``(volume, patch, rng, mask) -> dict`` of arrays keyed ``"<name>.<what>"``
        building one training sample, with a ``uses_patch`` attribute (True: it reads the random 3D patch;
        False: the whole volume). A builder with a ``patch_shape`` attribute is given the run's 3D patch shape
        (Rubik's cube resamples the body's box to it).
    hooks : str or object
        The network hooks (see the module docstring); a class is instantiated as ``hooks(name)``.
    backbone : str
        ``"3d-encoder"``, ``"3d"`` (the whole 3D U-Net, decoder included) or ``"2d"``.
    transfer_decoder : bool
        Whether fine-tuning (``transfer="auto"``) also takes the decoder this pretext trained (``"3d"`` / ``"2d"``).
        Context restoration's does not transfer: its residual decoder learns to output only the local correction of
        swapped patches (zero elsewhere), and starting a segmenter from it cost Dice (docs/study_brats.md).
    metrics : tuple of str
        The score keys it reports (``"context/psnr_gain"``, ...), first the headline one.
    defaults : callable, optional
        ``defaults(patch) -> dict`` of constructor options scaled to the 3D patch edge.
    batch : callable, optional
        ``batch(task, patch) -> int``: samples per step when this pretext trains alone and the user gave no batch
        size (the task object built with its options, the 3D patch edge); ``None``: the 3D default
        (:data:`napari_ssl.plan.DEFAULT_BATCH`). A combined run takes the smallest of its pretexts' batches. The
        imaging planes' 2D network takes as many plane pixels per step as two 3D patches hold voxels.
    explorer : ExplorerSpec
        How the Pretext explorer shows it.
    order : float
        Where the docks and ``names()`` list it: lower first (the built-ins: 10, 20, 30, 40), ties by name.
    module : str
        The package its relative references (``".task:MyTask"``) are resolved against: the unit's ``__name__``.
        Every relative reference (task, adapter, hooks, native views, explorer preview and answer) is made absolute
        when the spec is built.
    native_views : str or callable, optional
        ``native_views(raw, task, data, norm, seed, train_length, val_length, val_fraction) -> dict`` (``train``,
        ``val``, ``n_train``, ``n_val``, ``meta``): its samples from native 2D acquisitions (DICOM views of an exam,
        :mod:`napari_ssl.pretext.planes.native`); ``None``: it needs 3D scans.
    paper : str
        The reference (for docs and tooltips).
    """

    name: str
    label: str
    colour: str
    task: Any
    adapter: Any
    hooks: Any
    backbone: str = "3d"
    transfer_decoder: bool = True
    metrics: tuple[str, ...] = ()
    defaults: Callable[[int], dict[str, Any]] | None = None
    batch: Callable[[Any, int], int] | None = None
    explorer: ExplorerSpec = field(default_factory=ExplorerSpec)
    native_views: Any = None
    paper: str = ""
    order: float = 100.0
    module: str = ""

    def __post_init__(self) -> None:
        name = str(self.name)
        if not name or not all(c.islower() or c.isdigit() or c == "_" for c in name) or not name[0].isalpha():
            raise ValueError(f"pretext name must be lower-case letters, digits and '_', got {self.name!r}")
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {self.backbone!r}")
        colour = str(self.colour)
        if len(colour) != 7 or colour[0] != "#" or any(c not in "0123456789abcdefABCDEF" for c in colour[1:]):
            raise ValueError(f"colour must be '#rrggbb', got {self.colour!r}")
        bad = [m for m in self.metrics if not m.startswith(f"{name}/")]
        if bad:
            raise ValueError(f"metric keys of pretext {name!r} must start with '{name}/', got {bad}")
        object.__setattr__(self, "metrics", tuple(self.metrics))
        pkg = str(self.module)
        for key in ("task", "adapter", "hooks", "native_views"):
            object.__setattr__(self, key, _absolute(getattr(self, key), pkg))
        explorer = self.explorer
        answer = explorer.answer
        if answer is not None:
            answer = replace(answer, **{k: _absolute(getattr(answer, k), pkg)
                                        for k in ("compute", "describe", "draw", "canvas", "at_step")})
        object.__setattr__(self, "explorer", replace(explorer, preview=_absolute(explorer.preview, pkg),
                                                     answer=answer))

    # -- resolved on use (torch and heavy modules only here)
    def task_class(self) -> type:
        """The task class."""
        return resolve(self.task)  # type: ignore[no-any-return]

    def make(self, options: Mapping[str, Any] | None = None) -> Any:
        """A task object built with constructor ``options``; ``ValueError`` naming a bad one."""
        cls = self.task_class()
        try:
            return cls(**dict(options or {}))
        except TypeError as exc:
            raise ValueError(f"bad options for pretext {self.name!r}: {exc}") from exc

    def make_adapter(self, task: Any) -> Any:
        """The sample builder for ``task``."""
        return resolve(self.adapter)(task)

    def network(self) -> Any:
        """The network hooks (imports torch); a class is instantiated with the pretext's name."""
        hooks = resolve(self.hooks)
        return hooks(self.name) if isinstance(hooks, type) else hooks

    def default_options(self, patch: int) -> dict[str, Any]:
        """Constructor options scaled to the 3D patch edge ``patch``."""
        return dict(self.defaults(int(patch))) if self.defaults is not None else {}

    def default_batch(self, task: Any, patch: int, fallback: int) -> int:
        """Samples per step of a run of this pretext alone (``task`` built with its options), ``fallback`` (the 3D
        default) when it declares no rule; at least 1."""
        if self.batch is None:
            return int(fallback)
        return max(1, int(self.batch(task, int(patch))))

    def resolved_options(self, task: Any, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Every constructor option of ``task`` as it was built (its ``PARAMETERS`` read back from the object),
        over ``given`` (JSON-ready: tuples become lists), so a checkpoint keeps its task when defaults change."""
        import json

        out = dict(given or {})
        out.update({p.name: getattr(task, p.name) for p in self.parameters if hasattr(task, p.name)})
        return json.loads(json.dumps(out, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))

    @property
    def parameters(self) -> tuple[Any, ...]:
        """The task's ``PARAMETERS`` (imports the task module, not torch)."""
        return tuple(getattr(self.task_class(), "PARAMETERS", ()))


_REGISTRY: dict[str, PretextSpec] = {}
_loaded = False


def units() -> list[PretextSpec]:
    """The ``SPEC`` of every unit in :mod:`napari_ssl.pretext` (each non-underscore module or subpackage directly in
    it, wherever its ``__path__`` reaches), sorted by :attr:`PretextSpec.order` then name."""
    package = importlib.import_module(UNITS)
    found = []
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_"):
            continue
        spec = getattr(importlib.import_module(f"{UNITS}.{info.name}"), "SPEC", None)
        if isinstance(spec, PretextSpec):
            found.append(spec)
    return sorted(found, key=lambda s: (s.order, s.name))


def _load_builtins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for spec in units():
        _REGISTRY.setdefault(spec.name, spec)
    try:
        from importlib.metadata import entry_points

        found = entry_points(group=ENTRY_POINT_GROUP)
    except Exception:  # pragma: no cover - broken metadata must not break the built-ins
        found = ()
    for ep in found:
        try:
            spec = ep.load()
            spec = spec() if callable(spec) and not isinstance(spec, PretextSpec) else spec
            if isinstance(spec, PretextSpec):
                _REGISTRY.setdefault(spec.name, spec)
        except Exception:  # pragma: no cover - a broken plugin is skipped, the others load
            continue


def register(spec: PretextSpec, *, replace: bool = False) -> PretextSpec:
    """Add ``spec`` under ``spec.name``; ``ValueError`` when the name is taken (unless ``replace``)."""
    if not isinstance(spec, PretextSpec):
        raise ValueError(f"register takes a PretextSpec, got {type(spec).__name__}")
    _load_builtins()
    if spec.name in _REGISTRY and not replace and _REGISTRY[spec.name] is not spec:
        raise ValueError(f"a pretext called {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove a registered pretext (tests clean up with it); unknown names are ignored."""
    _load_builtins()
    _REGISTRY.pop(str(name).lower(), None)


def names() -> tuple[str, ...]:
    """Registered pretext names, built-ins first, in registration order."""
    _load_builtins()
    return tuple(_REGISTRY)


def specs() -> tuple[PretextSpec, ...]:
    """Every registered :class:`PretextSpec`."""
    _load_builtins()
    return tuple(_REGISTRY.values())


def labels() -> dict[str, str]:
    """``{name: label}`` of every registered pretext (what the docks show)."""
    return {s.name: s.label for s in specs()}


def get(name: str) -> PretextSpec:
    """The spec registered under ``name`` (case-insensitive); ``ValueError`` listing the known names."""
    _load_builtins()
    key = str(name).strip().lower()
    if key not in _REGISTRY:
        raise ValueError(f"unknown pretext {name!r}; choose one of {sorted(_REGISTRY)}")
    return _REGISTRY[key]
