"""TorchScript segmenters: a scripted network (``model.ts`` or ``model.pt``, saved by ``torch.jit.save``) with a small
JSON sidecar this tool defines, beside it with the same stem (``model.ts`` -> ``model.json``).

The sidecar says what the scripted network cannot say about itself::

    {
      "format": "napari-ssl-torchscript",
      "version": 1,
      "channels": [{"name": "flair", "modality": "MR"}],          # the inputs, in the network's channel order
      "classes": [{"index": 1, "name": "lesion", "colour": "#e6194b"}],   # label values (background 0 not listed)
      "spacing": [2.5, 1.5, 1.5],     # voxel size in mm (z, y, x) the network works on; null: the scan's own
      "orientation": "LPS",           # "LPS" or "RAS" (or any DICOM code); null: the file's own axis order
      "normalization": {"mode": "zscore_nonzero", "percentiles": [0.5, 99.5]},   # napari_ssl.preprocess.Normalization
      "patch": [32, 64, 64],          # sliding-window size (z, y, x voxels)
      "overlap": 0.5,                 # default overlap of the windows (optional)
      "output": "logits",             # the network returns (1, n_classes + 1, z, y, x) logits or probabilities
      "description": "..."            # optional free words
    }

The network takes a (1, C, z, y, x) float32 tensor on that grid (axes in array order z, y, x) and returns one channel
per label value, background first; the mask is their argmax. The scan goes through napari-ssl's own pipeline
(:func:`napari_ssl.preprocess.prepare_channels`: reorient, resample, normalise; MONAI sliding windows with Gaussian
blending; labels back on the scan's grid), so a model exported by ``napari-ssl export --format torchscript`` gives the
masks of its checkpoint. A folder holding one such file and its sidecar is opened too.

Trust: none. A TorchScript archive holds the network's code as TorchScript (a restricted language run by torch's
interpreter) and its tensors; ``torch.jit.load`` runs no Python from the file, unlike a pickle.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_ssl.inference.segmenter import (
    Format,
    InputChannel,
    OutputClass,
    Segmenter,
    SegmenterError,
    SegmenterInfo,
)
from napari_ssl.io.volume import Volume
from napari_ssl.preprocess import Normalization

__all__ = ["FORMAT", "SIDECAR_FORMAT", "Sidecar", "describe", "detect", "open_torchscript", "read_sidecar",
           "sidecar_path", "write_sidecar"]

NAME = "torchscript"
SIDECAR_FORMAT = "napari-ssl-torchscript"
SIDECAR_VERSION = 1
SUFFIXES = (".ts", ".pt")


@dataclass(frozen=True)
class Sidecar:
    """The sidecar of a TorchScript segmenter (see the module's docstring for its JSON)."""

    channels: tuple[InputChannel, ...]
    classes: tuple[OutputClass, ...]
    spacing: tuple[float, float, float] | None
    orientation: str | None
    normalization: Normalization
    patch: tuple[int, int, int]
    overlap: float = 0.5
    output: str = "logits"
    description: str = ""

    def __post_init__(self) -> None:
        if not self.channels:
            raise ValueError("channels must name at least one input")
        if not self.classes:
            raise ValueError("classes must name at least one label value")
        if len(self.patch) != 3 or min(self.patch) < 1:
            raise ValueError(f"patch must be three positive sizes (z, y, x), got {self.patch!r}")
        if self.output not in ("logits", "probabilities"):
            raise ValueError(f"output must be 'logits' or 'probabilities', got {self.output!r}")
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": SIDECAR_FORMAT, "version": SIDECAR_VERSION,
            "channels": [{"name": c.name, "modality": c.modality} for c in self.channels],
            "classes": [{"index": c.index, "name": c.name, "colour": c.colour} for c in self.classes],
            "spacing": list(self.spacing) if self.spacing else None, "orientation": self.orientation,
            "normalization": self.normalization.to_dict(), "patch": list(self.patch), "overlap": self.overlap,
            "output": self.output, "description": self.description,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Sidecar:
        if data.get("format") != SIDECAR_FORMAT:
            raise ValueError(f"format must be {SIDECAR_FORMAT!r}, got {data.get('format')!r}")
        if int(data.get("version", 0)) > SIDECAR_VERSION:
            raise ValueError(f"version {data.get('version')} is newer than this napari-ssl reads ({SIDECAR_VERSION})")
        spacing = data.get("spacing")
        return cls(
            channels=tuple(InputChannel(str(c["name"]), c.get("modality")) for c in data["channels"]),
            classes=tuple(OutputClass(int(c["index"]), str(c["name"]), c.get("colour") or c.get("color"))
                          for c in data["classes"]),
            spacing=tuple(float(s) for s in spacing) if spacing else None,  # type: ignore[arg-type]
            orientation=data.get("orientation") or None,
            normalization=Normalization.from_dict(data.get("normalization") or {"mode": "none"}),
            patch=tuple(int(p) for p in data["patch"]),  # type: ignore[arg-type]
            overlap=float(data.get("overlap", 0.5)), output=str(data.get("output", "logits")),
            description=str(data.get("description", "")),
        )


def _model_file(path: Path) -> Path | None:
    if path.is_file():
        return path if path.suffix in SUFFIXES else None
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix in SUFFIXES and p.is_file())
        return found[0] if len(found) == 1 else None
    return None


def sidecar_path(model_file: Path) -> Path:
    """``model.ts`` -> ``model.json`` beside it."""
    return model_file.with_suffix(".json")


def detect(path: Path) -> bool:
    return _model_file(path) is not None


def read_sidecar(model_file: Path) -> Sidecar:
    """The sidecar of ``model_file``; one sentence naming the file looked for when it is missing or wrong."""
    side = sidecar_path(model_file)
    if not side.is_file():
        raise SegmenterError(
            f"{model_file}: no sidecar {side.name} beside it; a TorchScript network needs one saying its input "
            "channels, classes, spacing, orientation, normalisation and window size "
            "(see napari_ssl.inference.formats.torchscript)")
    try:
        return Sidecar.from_dict(json.loads(side.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError) as exc:
        raise SegmenterError(f"{side}: not a valid {SIDECAR_FORMAT} sidecar ({exc})") from None


def write_sidecar(model_file: Path, sidecar: Sidecar) -> Path:
    """Write ``sidecar`` beside ``model_file``; returns the sidecar's path."""
    side = sidecar_path(model_file)
    side.write_text(json.dumps(sidecar.to_dict(), indent=2) + "\n", encoding="utf-8")
    return side


def describe(path: Path) -> SegmenterInfo:
    model_file = _model_file(path)
    assert model_file is not None
    side = read_sidecar(model_file)
    details = [("windows", " x ".join(str(p) for p in side.patch)), ("normalisation", side.normalization.describe())]
    if side.spacing:
        details.insert(0, ("voxels", " x ".join(f"{s:g}" for s in side.spacing) + " mm"))
    return SegmenterInfo(
        path=str(model_file), format=NAME, title=model_file.stem if model_file.stem != "model" else path.name,
        channels=side.channels, classes=side.classes, spacing=side.spacing, orientation=side.orientation,
        description=side.description, details=tuple(details),
    )


class TorchScriptSegmenter(Segmenter):
    """A scripted network behind napari-ssl's own pipeline (prepare, sliding windows, back to the scan's grid)."""

    def __init__(self, info: SegmenterInfo, net: Any, sidecar: Sidecar, device: Any) -> None:
        self.info = info
        self.net = net
        self.sidecar = sidecar
        self.device = str(device)

    def predict(self, channels: Sequence[Volume], *, progress: Callable[[float], None] | None = None,
                should_stop: Callable[[], bool] | None = None, **options: Any) -> Volume:
        """Options: ``overlap`` (default the sidecar's), ``sw_batch_size``, ``largest_component``,
        ``max_memory_mb``."""
        from napari_ssl.inference.segment import labels_on_scan
        from napari_ssl.inference.sliding import MAX_MEMORY_MB

        side = self.sidecar
        return labels_on_scan(
            self.net, self.check_inputs(channels), spacing=side.spacing, normalization=side.normalization,
            orientation=side.orientation, patch=side.patch, class_indices=[c.index for c in side.classes],
            names=self.info.names, model_path=self.info.path, overlap=float(options.get("overlap", side.overlap)),
            sw_batch_size=int(options.get("sw_batch_size", 1)), sw_device=self.device, device=self.device,
            largest_component=bool(options.get("largest_component")),
            max_memory_mb=float(options.get("max_memory_mb", MAX_MEMORY_MB)), progress=progress,
            should_stop=should_stop,
        )

def open_torchscript(info: SegmenterInfo, device: str = "auto", **options: Any) -> TorchScriptSegmenter:
    """``torch.jit.load`` the file (no Python from the file runs); a file that is no TorchScript archive (a pickled
    state dict saved as ``.pt``) is refused in one sentence."""
    import torch

    from napari_ssl.device import resolve_device

    model_file = Path(info.path)
    dev = resolve_device(str(device))
    try:
        net = torch.jit.load(str(model_file), map_location=dev)
    except (RuntimeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or ["unreadable"])[0]
        raise SegmenterError(f"{model_file} is not a TorchScript archive saved by torch.jit.save ({first})") from None
    net.eval()
    return TorchScriptSegmenter(info, net, read_sidecar(model_file), dev)


FORMAT = Format(name=NAME, looks_for="a .ts/.pt TorchScript file with its .json sidecar", detect=detect,
                describe=describe, open=open_torchscript)
