"""The pretraining network: shared backbones plus the heads of the pretexts, combined with weighted losses.

Every pretext comes from :mod:`napari_ssl.pretext.registry`; its ``backbone`` says which network it uses and its
network hooks (each unit's ``network`` module, e.g. :mod:`napari_ssl.pretext.rubik.network`) add its heads, run its
forward pass and give its losses and metrics; its head fields are its own (``ModelSpec.heads[name]``).

- The 3D pretexts share one 3D :class:`~napari_ssl.models.backbone.UNet` (``backbone3d``): Rubik's Siamese head
  reads its encoder on every cube, the restoration pretexts (context, Models Genesis) use the whole U-Net.
- The 2D pretexts (imaging planes) use a 2D U-Net (``backbone2d``). (A 2D network cannot share weights with a
  3D one; in a combined run the 3D pretexts share their encoder and the planes train the 2D one.)

Weight names are stable (``backbone3d.net.conv_0...``, ``backbone2d.net...``, ``rubik_head...``,
``position_head...``, ``line_head...``), so fine-tuning lifts the encoder (and decoder) out by prefix with
:func:`~napari_ssl.models.backbone.load_parts`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from napari_ssl.models.backbone import BackboneSpec, UNet
from napari_ssl.pretext import registry

PREFIX_3D = "backbone3d."
PREFIX_2D = "backbone2d."


@dataclass(frozen=True)
class ModelSpec:
    """Everything that shapes the pretraining network (stored in ``meta.json`` as ``model``).

    The shared fields are here; each pretext owns its head fields (its network hooks'
    :attr:`~napari_ssl.models.hooks.Hooks.FIELDS`, e.g. Rubik's ``cube_shape``, the planes' ``n_views``), kept in
    ``heads[name]`` with its defaults filled in.

    Parameters
    ----------
    pretexts : tuple of str
        Registered pretext names (:func:`napari_ssl.pretext.registry.names`).
    backbone : str
        Size of both backbones (``tiny`` ... ``large``).
    in_channels : int
        Image channels.
    heads : dict
        ``{pretext: {field: value}}``: the head fields each pretext's hooks read (lists become tuples); a field not
        given takes the pretext's default, a field the pretext does not have is a ``ValueError``.
    """

    pretexts: tuple[str, ...]
    backbone: str = "small"
    in_channels: int = 1
    heads: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        pretexts = tuple(self.pretexts)
        known = registry.names()
        if not pretexts or any(p not in known for p in pretexts) or len(set(pretexts)) != len(pretexts):
            raise ValueError(f"pretexts must be distinct names among {known}, got {self.pretexts!r}")
        object.__setattr__(self, "pretexts", pretexts)
        given = {str(k): dict(v or {}) for k, v in dict(self.heads or {}).items()}
        stray = sorted(set(given) - set(pretexts))
        if stray:
            raise ValueError(f"head fields given for {stray}, which this network does not learn ({list(pretexts)})")
        hooks = self.hooks()
        heads: dict[str, dict[str, Any]] = {}
        for name, hook in hooks.items():
            defaults = dict(getattr(hook, "FIELDS", {}))
            unknown = sorted(set(given.get(name, {})) - set(defaults))
            if unknown:
                raise ValueError(f"{name} has no head field {', '.join(unknown)}; its fields: {sorted(defaults)}")
            merged = {**defaults, **given.get(name, {})}
            heads[name] = {k: tuple(v) if isinstance(v, list) else v for k, v in merged.items()}
        object.__setattr__(self, "heads", heads)
        for hook in hooks.values():
            hook.check(self)

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def hooks(self) -> dict[str, Any]:
        """The network hooks of each pretext (see :mod:`napari_ssl.pretext.registry`)."""
        return {name: registry.get(name).network() for name in self.pretexts}

    @property
    def backbones(self) -> set[str]:
        """The backbones the pretexts use: ``"3d-encoder"``, ``"3d"`` (whole U-Net), ``"2d"``."""
        return {registry.get(name).backbone for name in self.pretexts}

    @property
    def spec3d(self) -> BackboneSpec | None:
        if self.backbones & {"3d", "3d-encoder"}:
            return BackboneSpec(size=self.backbone, spatial_dims=3, in_channels=self.in_channels)
        return None

    @property
    def spec2d(self) -> BackboneSpec | None:
        if "2d" in self.backbones:
            return BackboneSpec(size=self.backbone, spatial_dims=2, in_channels=self.in_channels)
        return None

    def with_choices_of(self, saved: ModelSpec) -> ModelSpec:
        """This network with the head choices of ``saved`` (each pretext's hooks'
        :attr:`~napari_ssl.models.hooks.Hooks.CHOICES`, whose defaults changed over versions): a resumed run keeps
        its checkpoint's heads."""
        heads = {}
        for name, hook in self.hooks().items():
            kept = saved.heads.get(name, {})
            heads[name] = {**self.heads[name],
                           **{k: kept[k] for k in getattr(hook, "CHOICES", ()) if k in kept}}
        return replace(self, heads=heads)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``pretexts``, ``backbone``, ``in_channels`` and ``heads`` (tuples as lists)."""
        return {
            "pretexts": list(self.pretexts),
            "backbone": self.backbone,
            "in_channels": self.in_channels,
            "heads": {name: {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}
                      for name, fields in self.heads.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSpec:
        """The network of a ``meta.json`` ``model`` dict: :meth:`to_dict`'s, or the flat one written before
        ``heads`` (each pretext's hooks' :attr:`~napari_ssl.models.hooks.Hooks.FLAT` says where its fields were). A
        head field the checkpoint lacks takes the pretext's legacy value (the head of its time)."""
        pretexts = tuple(data["pretexts"])
        heads = {}
        for name in pretexts:
            hook = registry.get(name).network()
            if "heads" in data:
                own = dict((data["heads"] or {}).get(name) or {})
            else:  # meta.json written before ModelSpec.heads: every head field flat beside the shared ones
                own = {f: data[key] for key, f in getattr(hook, "FLAT", {}).items() if key in data}
            heads[name] = {**dict(getattr(hook, "LEGACY", {})), **own}
        shared = {k: data[k] for k in ("backbone", "in_channels") if k in data}
        return cls(pretexts=pretexts, heads=heads, **shared)


class PretrainModel(nn.Module):
    """Backbones and heads for the pretexts of ``spec``; ``forward(batch)`` returns every head's output."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self._hooks = spec.hooks()
        if spec.spec3d is not None:
            self.backbone3d = UNet(spec.spec3d, out_channels=self._out_channels({"3d", "3d-encoder"}))
        if spec.spec2d is not None:
            self.backbone2d = UNet(spec.spec2d, out_channels=self._out_channels({"2d"}))
        for hooks in self._hooks.values():
            hooks.build(self)

    def _out_channels(self, backbones: set[str]) -> int:
        """The output channels a pretext on these backbones asks for (its hooks' ``out_channels``), else the image
        channels."""
        for name, hooks in self._hooks.items():
            ask = getattr(hooks, "out_channels", None)
            wanted = ask(self.spec) if ask is not None and registry.get(name).backbone in backbones else None
            if wanted is not None:
                return int(wanted)
        return int(self.spec.in_channels)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for hooks in self._hooks.values():
            out.update(hooks.forward(self, batch))
        return out

    def losses(
        self,
        out: Mapping[str, torch.Tensor],
        batch: Mapping[str, torch.Tensor],
        weights: Mapping[str, float] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Each pretext's loss (and its parts) plus ``"loss"``, the weighted sum."""
        weights = dict(weights or {})
        losses: dict[str, torch.Tensor] = {}
        for hooks in self._hooks.values():
            losses.update(hooks.losses(self, out, batch))
        losses["loss"] = sum(weights.get(p, 1.0) * losses[p] for p in self.spec.pretexts)  # type: ignore[assignment]
        return losses

    def metrics(self, out: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """The pretext metrics of one held-out batch (keys ``"<pretext>/<metric>"``)."""
        out = {k: v.detach() for k, v in out.items()}
        metrics: dict[str, float] = {}
        for hooks in self._hooks.values():
            metrics.update(hooks.metrics(out, batch))
        return metrics

    def unused_parameters_possible(self) -> bool:
        """True when some parameters get no gradient (encoder-only pretexts leave the 3D decoder unused)."""
        return "3d-encoder" in self.spec.backbones and "3d" not in self.spec.backbones


def backbone_prefixes(pretexts: Sequence[str]) -> dict[str, str]:
    """Where each backbone's weights live in a pretraining checkpoint: ``{"3d": "backbone3d.", ...}``."""
    used = {registry.get(name).backbone for name in pretexts}
    out = {}
    if used & {"3d", "3d-encoder"}:
        out["3d"] = PREFIX_3D
    if "2d" in used:
        out["2d"] = PREFIX_2D
    return out


def has_decoder(pretexts: Sequence[str], backbone: str = "3d") -> bool:
    """True when a pretext of ``pretexts`` trained the whole ``backbone`` U-Net and its decoder is worth transferring
    (:attr:`~napari_ssl.pretext.registry.PretextSpec.transfer_decoder`)."""
    specs = [registry.get(name) for name in pretexts if name in registry.names()]
    return any(spec.backbone == backbone and spec.transfer_decoder for spec in specs)
