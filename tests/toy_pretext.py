"""A toy pretext declared entirely here and added through :func:`napari_ssl.pretext.registry.register` alone:
"flip" mirrors the patch along each axis with probability 1/2 and the network says which axes were mirrored (three
binary logits from the pooled 3D encoder). Nothing in napari_ssl names it; tests register it with ``FLIP`` and
remove it afterwards."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from napari_ssl.pretext import ParamSpec, PretextSpec, registry
from napari_ssl.pretext._base import as_rng, flip, shape_and_spacing


@dataclass(frozen=True)
class FlipParams:
    shape: tuple[int, int, int]
    axes: tuple[bool, bool, bool]


class FlipTask:
    """Mirror the patch along random axes; predict which (a toy, 2026)."""

    name: ClassVar[str] = "flip"
    PARAMETERS: ClassVar[tuple[ParamSpec, ...]] = (
        ParamSpec("p_flip", float, 0.5, 0.0, 1.0, "probability of mirroring each axis"),
    )

    def __init__(self, p_flip: float = 0.5) -> None:
        if not 0.0 <= p_flip <= 1.0:
            raise ValueError(f"p_flip must be in [0, 1], got {p_flip}")
        self.p_flip = float(p_flip)

    def sample(self, shape: Any, rng: Any = None, spacing: Any = None, foreground: Any = None) -> FlipParams:
        dims, _ = shape_and_spacing(shape, spacing)
        draws = as_rng(rng).random(3) < self.p_flip
        return FlipParams(dims, (bool(draws[0]), bool(draws[1]), bool(draws[2])))

    def apply(self, x: Any, params: FlipParams) -> Any:
        axes = tuple(x.ndim - 3 + k for k in range(3) if params.axes[k])
        out = flip(x, axes)
        return out.copy() if isinstance(out, np.ndarray) else out

    def invert(self, y: Any, params: FlipParams) -> Any:
        return self.apply(y, params)

    def targets(self, params: FlipParams) -> dict[str, Any]:
        return {"axes": np.asarray(params.axes, dtype=np.float32)}

    def overlay(self, params: FlipParams) -> dict[str, Any]:
        shape = np.asarray(params.shape)
        return {"kind": "flip", "boxes": np.stack([np.zeros(3, int), shape])[None]}

    def describe(self, params: FlipParams) -> str:
        return "mirrored along " + (", ".join(a for a, on in zip("zyx", params.axes, strict=True) if on) or "no axis")


class FlipAdapter:
    uses_patch = True

    def __init__(self, task: FlipTask) -> None:
        self.task = task

    def __call__(self, volume: Any, patch: np.ndarray, rng: np.random.Generator, mask: Any = None) -> dict[str, Any]:
        params = self.task.sample(patch.shape[-3:], rng)
        return {
            "flip.input": np.ascontiguousarray(self.task.apply(patch, params), dtype=np.float32),
            "flip.axes": self.task.targets(params)["axes"],
        }


class FlipHooks:
    """Network hooks: a linear head on the globally pooled deepest encoder features."""

    def __init__(self, name: str) -> None:
        self.name = name

    def model_fields(self, task: Any, probe: Any) -> dict[str, Any]:
        return {}

    def check(self, spec: Any) -> None:
        return None

    def build(self, model: Any) -> None:
        from torch import nn

        from napari_ssl.models.backbone import LEVELS

        model.flip_head = nn.Linear(model.backbone3d.channels(LEVELS), 3)

    def forward(self, model: Any, batch: Any) -> dict[str, Any]:
        feats = model.backbone3d.encode(batch["flip.input"])[-1]
        return {"flip.logits": model.flip_head(feats.mean(dim=(-3, -2, -1)))}

    def losses(self, model: Any, out: Any, batch: Any) -> dict[str, Any]:
        from torch.nn import functional as F

        return {"flip": F.binary_cross_entropy_with_logits(out["flip.logits"].float(), batch["flip.axes"].float())}

    def metrics(self, out: Any, batch: Any) -> dict[str, float]:
        right = ((out["flip.logits"] > 0).float() == batch["flip.axes"].float()).float().mean()
        return {"flip/axis_acc": float(right)}


FLIP = PretextSpec(
    name="flip",
    label="Flip (toy)",
    colour="#123456",
    task=FlipTask,
    adapter=FlipAdapter,
    hooks=FlipHooks,
    backbone="3d-encoder",
    metrics=("flip/axis_acc",),
)


def registered() -> Any:
    """Context manager: ``FLIP`` registered inside, removed after."""
    import contextlib

    @contextlib.contextmanager
    def scope() -> Any:
        registry.register(FLIP)
        try:
            yield FLIP
        finally:
            registry.unregister(FLIP.name)

    return scope()
