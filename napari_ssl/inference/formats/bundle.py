"""MONAI bundles: a folder with ``configs/metadata.json``, ``configs/inference.json`` (or ``.yaml``) and
``models/model.pt`` (a state dict) or ``models/model.ts`` (TorchScript), run through :mod:`monai.bundle`.

- Described from ``metadata.json``'s ``network_data_format``: the input's ``num_channels``, ``channel_def`` and
  ``modality``, the output's ``channel_def`` / ``num_channels`` (class names), the bundle's name and description. The
  spacing and orientation shown are read from the literal arguments of the config's ``Spacingd`` (or its top-level
  ``pixdim``) / ``Orientationd``.
- Opened with :class:`monai.bundle.ConfigParser` on the inference config (``bundle_root`` set to the folder, ``device``
  to ours): the network (``network_def`` with ``models/model.pt`` loaded by ``torch.load(weights_only=True)``, or
  ``models/model.ts``), the bundle's own ``preprocessing`` with its ``LoadImage(d)`` replaced by the scan already in
  memory (a ``MetaTensor`` carrying the RAS affine MONAI's readers give), its ``inferer`` and its ``postprocessing``
  without ``SaveImage(d)`` (``Invertd`` kept, so the labels return to the scan's grid), applied as MONAI's evaluator
  applies them (collate, infer, decollate, postprocess). The result is put on ``channels[0]``'s grid.

Trust: a bundle's config runs the Python expressions it holds (``"$..."``) when it is parsed, so a bundle opens only
with ``trust=True`` (the dock's check box, ``--trust``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_ssl.inference.segmenter import (
    Format,
    InputChannel,
    OutputClass,
    Segmenter,
    SegmenterError,
    SegmenterInfo,
)
from napari_ssl.io.volume import Volume

__all__ = ["FORMAT", "affine_of", "describe", "detect", "open_bundle", "volume_of"]

NAME = "monai-bundle"
CONFIGS = ("inference.json", "inference.yaml", "inference.yml")
WEIGHTS = ("model.pt", "model.ts")
TRUST_REASON = "a MONAI bundle's config runs the Python expressions it holds ('$...') when it is parsed"
_RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _config_file(path: Path) -> Path | None:
    return next((path / "configs" / n for n in CONFIGS if (path / "configs" / n).is_file()), None)


def detect(path: Path) -> bool:
    return path.is_dir() and (path / "configs" / "metadata.json").is_file() and _config_file(path) is not None


def _weights(path: Path) -> Path:
    found = next((path / "models" / n for n in WEIGHTS if (path / "models" / n).is_file()), None)
    if found is None:
        raise SegmenterError(f"{path}: no weights file in this MONAI bundle (looked for models/model.pt and "
                             "models/model.ts)")
    return found


def _modality(text: Any) -> str | None:
    word = str(text or "").upper()
    if word.startswith("CT"):
        return "CT"
    if word.startswith("MR"):
        return "MR"
    return None


def _targets(node: Any, name: str) -> Iterator[dict[str, Any]]:
    """Every config component whose ``_target_`` ends with ``name`` (literal values only are used)."""
    if isinstance(node, dict):
        if str(node.get("_target_", "")).rsplit(".", 1)[-1] == name:
            yield node
        for value in node.values():
            yield from _targets(value, name)
    elif isinstance(node, list):
        for value in node:
            yield from _targets(value, name)


def _read_config(path: Path) -> dict[str, Any]:
    if path.suffix == ".json":
        return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]
    import yaml

    return yaml.safe_load(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def describe(path: Path) -> SegmenterInfo:
    """From ``metadata.json`` and the config's text (nothing parsed by MONAI, nothing executed)."""
    meta = json.loads((path / "configs" / "metadata.json").read_text(encoding="utf-8"))
    config_file = _config_file(path)
    assert config_file is not None
    weights = _weights(path)
    fmt = meta.get("network_data_format") or {}
    inputs, outputs = fmt.get("inputs") or {}, fmt.get("outputs") or {}
    image = inputs.get("image") or next(iter(inputs.values()), {})
    pred = outputs.get("pred") or next(iter(outputs.values()), {})
    n_in = int(image.get("num_channels", 1) or 1)
    names = {int(k): str(v) for k, v in (image.get("channel_def") or {}).items()}
    modality = _modality(image.get("modality"))
    channels = tuple(InputChannel(names.get(i, "image" if n_in == 1 else f"channel {i}"), modality)
                     for i in range(n_in))
    defs = {int(k): str(v) for k, v in (pred.get("channel_def") or {}).items()}
    n_out = int(pred.get("num_channels", 0) or 0)
    if defs:
        classes = tuple(OutputClass(i, name) for i, name in sorted(defs.items()) if i > 0)
    else:
        classes = tuple(OutputClass(i, f"class {i}") for i in range(1, max(n_out, 2)))
    config = _read_config(config_file)
    spacing = orientation = None
    # a Spacingd's literal pixdim, else a top-level "pixdim" (napari-ssl's exported bundles resample with
    # ResampleToMatchd to a grid of that spacing: napari_ssl.inference.export)
    for pix in [*(node.get("pixdim") for node in _targets(config, "Spacingd")), config.get("pixdim")]:
        if isinstance(pix, list) and len(pix) == 3 and all(isinstance(p, (int, float)) for p in pix):
            spacing = (float(pix[2]), float(pix[1]), float(pix[0]))
            break
    for node in _targets(config, "Orientationd"):
        if isinstance(node.get("axcodes"), str):
            orientation = node["axcodes"]
    details = [("version", str(meta.get("version", "?"))), ("weights", f"models/{weights.name}")]
    return SegmenterInfo(
        path=str(path), format=NAME, title=str(meta.get("name") or path.name), channels=channels, classes=classes,
        spacing=spacing, orientation=orientation, needs_trust=True, trust_reason=TRUST_REASON,
        description=str(meta.get("description", "")), details=tuple(details),
    )


# ---------------------------------------------------------------- geometry between napari-ssl and MONAI
def affine_of(volume: Volume) -> np.ndarray:
    """The 4x4 RAS affine MONAI's readers give for ``volume``'s file (index i, j, k = our x, y, z)."""
    lps = np.eye(4)
    lps[:3, :3] = volume.direction[::-1, ::-1] * np.asarray(volume.spacing[::-1])[None, :]
    lps[:3, 3] = volume.origin[::-1]
    return _RAS_FROM_LPS @ lps


def volume_of(array: np.ndarray, affine: np.ndarray, like: Volume | None = None) -> Volume:
    """A MONAI spatial array (i, j, k) with its RAS ``affine`` as a :class:`Volume` (z, y, x)."""
    lps = _RAS_FROM_LPS @ np.asarray(affine, dtype=float)
    spacing_xyz = np.linalg.norm(lps[:3, :3], axis=0)
    direction_xyz = lps[:3, :3] / spacing_xyz[None, :]
    return Volume(np.ascontiguousarray(np.asarray(array).transpose(2, 1, 0)), tuple(spacing_xyz[::-1]),
                  tuple(lps[:3, 3][::-1]), direction_xyz[::-1, ::-1].copy(),
                  name=like.name if like is not None else None)


def _meta_tensor(channels: Sequence[Volume], dtype: Any) -> Any:
    """What ``LoadImage`` would give for the file of ``channels`` (one 3D file, or a 4D one with channels last)."""
    from monai.data import MetaTensor

    first = channels[0]
    affine = affine_of(first)
    arrays = [np.asarray(c.array).transpose(2, 1, 0) for c in channels]
    array = arrays[0] if len(arrays) == 1 else np.stack(arrays, axis=-1)
    meta = {
        "original_affine": affine.copy(), "spatial_shape": np.asarray(arrays[0].shape),
        "original_channel_dim": float("nan") if len(arrays) == 1 else -1, "space": "RAS",
        "filename_or_obj": first.path or first.name or "image",
    }
    array = np.ascontiguousarray(array) if dtype is None else np.ascontiguousarray(array, dtype=dtype)
    return MetaTensor(array, affine=affine, meta=meta)


# ---------------------------------------------------------------- the segmenter
class BundleSegmenter(Segmenter):
    """A MONAI bundle's network, preprocessing, inferer and postprocessing on scans in memory."""

    def __init__(self, info: SegmenterInfo, parser: Any, net: Any, device: Any) -> None:
        from monai.transforms import LoadImage, LoadImaged, SaveImage, SaveImaged

        self.info = info
        self.parser = parser
        self.net = net
        self.device = str(device)
        self._torch_device = device
        self.preprocessing = _first(parser, ("preprocessing", "pre_transforms"))
        self.postprocessing = _first(parser, ("postprocessing", "post_transforms"))
        self.inferer = _first(parser, ("inferer",))
        if self.inferer is None:
            raise SegmenterError(f"{info.path}: the inference config defines no 'inferer'")
        self.loaders = _remove(self.preprocessing, (LoadImage, LoadImaged)) if self.preprocessing else []
        if self.postprocessing is not None:
            _remove(self.postprocessing, (SaveImage, SaveImaged))
        keys = [k for t in self.loaders for k in getattr(t, "keys", ())]
        self.image_key = keys[0] if keys else "image"
        self.load_options = _load_options(parser.get())

    def predict(self, channels: Sequence[Volume], *, progress: Callable[[float], None] | None = None,
                should_stop: Callable[[], bool] | None = None, **options: Any) -> Volume:
        """The bundle's own steps (options are the bundle's, fixed in its config: none here)."""
        import torch
        from monai.data import decollate_batch, list_data_collate
        from monai.inferers import SlidingWindowInferer
        from monai.transforms import EnsureChannelFirst

        from napari_ssl.inference.sliding import SegmentationCancelled, count_windows
        from napari_ssl.preprocess import back_to_grid

        def check() -> None:
            if should_stop is not None and should_stop():
                raise SegmentationCancelled("segmentation cancelled")

        chans = self.check_inputs(channels)
        reference = chans[0]
        load = self.load_options
        image = _meta_tensor(chans, load["dtype"])
        if load["ensure_channel_first"]:
            image = EnsureChannelFirst()(image)
        data: dict[str, Any] = {self.image_key: image}
        if not load["image_only"]:
            data[f"{self.image_key}_meta_dict"] = dict(image.meta)
        check()
        if self.preprocessing is not None:
            data = self.preprocessing(data)
        if progress is not None:
            progress(0.1)
        check()
        batch = list_data_collate([data])
        inputs = batch[self.image_key].to(self._torch_device)
        total = 1
        if isinstance(self.inferer, SlidingWindowInferer):
            total = max(1, -(-count_windows(inputs.shape[2:], self.inferer.roi_size, self.inferer.overlap)
                             // max(1, int(self.inferer.sw_batch_size))))
        done = [0]
        net = self.net

        def network(x: Any, *args: Any, **kwargs: Any) -> Any:
            check()
            out = net(x, *args, **kwargs)
            done[0] += 1
            if progress is not None:
                progress(0.1 + 0.8 * min(1.0, done[0] / total))
            return out

        with torch.no_grad():
            pred = self.inferer(inputs, network)
        check()
        item = decollate_batch({**batch, self.image_key: inputs, "pred": pred})[0]
        if self.postprocessing is not None:
            item = self.postprocessing(item)
        out = item["pred"]
        labels = np.asarray(out.detach().cpu().numpy() if isinstance(out, torch.Tensor) else out)
        if labels.ndim == 4:
            labels = labels[0] if labels.shape[0] == 1 else np.argmax(labels, axis=0)
        affine = getattr(out, "affine", None)
        if affine is None:
            affine = affine_of(reference)
        values = np.rint(labels)
        dtype = np.uint8 if values.max(initial=0) < 256 else np.uint16
        grid = volume_of(values.astype(dtype), np.asarray(affine.cpu() if hasattr(affine, "cpu") else affine))
        mask = back_to_grid(grid, reference) if dtype == np.uint8 else reference.with_array(grid.array)
        if progress is not None:
            progress(1.0)
        name = f"{reference.name} masks" if reference.name else "masks"
        meta = {"classes": {str(k): v for k, v in self.info.names.items()}, "model": self.info.path}
        return Volume(mask.array, mask.spacing, mask.origin, mask.direction, None, name, meta)


def _load_options(config: Any) -> dict[str, Any]:
    """The settings of the config's ``LoadImage(d)`` that shape the image it gives (its text, MONAI's defaults)."""
    node = next(iter([*_targets(config, "LoadImaged"), *_targets(config, "LoadImage")]), {})
    dtype: Any = np.float32
    text = node.get("dtype")
    if isinstance(text, str):
        try:
            dtype = np.dtype(text.removeprefix("$").rsplit(".", 1)[-1])
        except TypeError:
            dtype = np.float32
    elif text is None and "dtype" in node:
        dtype = None
    return {"dtype": dtype, "ensure_channel_first": node.get("ensure_channel_first") is True,
            "image_only": node.get("image_only", True) is not False}


def _first(parser: Any, ids: Sequence[str]) -> Any:
    for key in ids:
        if key in parser:
            return parser.get_parsed_content(key)
    return None


def _remove(compose: Any, kinds: tuple[type, ...]) -> list[Any]:
    """Take the transforms of ``kinds`` out of ``compose`` (nested ``Compose`` too), in place; returns them."""
    from monai.transforms import Compose

    removed: list[Any] = []
    kept = []
    for t in compose.transforms:
        if isinstance(t, kinds):
            removed.append(t)
            continue
        if isinstance(t, Compose):
            removed += _remove(t, kinds)
        kept.append(t)
    compose.transforms = type(compose.transforms)(kept) if isinstance(compose.transforms, tuple) else kept
    return removed


def load_bundle_network(root: Path, parser: Any, device: Any) -> Any:
    """The bundle's network on ``device``: ``models/model.ts``, or ``network_def`` with ``models/model.pt``."""
    import pickle

    import torch

    weights = _weights(root)
    if weights.suffix == ".ts" and not (root / "models" / "model.pt").is_file():
        return torch.jit.load(str(weights), map_location=device).eval()
    weights = root / "models" / "model.pt"
    key = next((k for k in ("network_def", "network") if k in parser), None)
    if key is None:
        raise SegmenterError(f"{root}: the inference config defines no 'network_def'")
    net = parser.get_parsed_content(key)
    try:
        state = torch.load(str(weights), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # objects besides tensors: allowed, the bundle is trusted already
        state = torch.load(str(weights), map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError) as exc:
        raise SegmenterError(f"{weights}: not a readable torch weights file ({exc})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise SegmenterError(f"{weights}: weights do not fit the bundle's network_def ({first})") from None
    return net.to(device).eval()


def open_bundle(info: SegmenterInfo, device: str = "auto", **options: Any) -> BundleSegmenter:
    """Parse the bundle's inference config (``bundle_root`` = the folder, ``device`` = ours) and load its network."""
    from monai.bundle import ConfigParser

    from napari_ssl.device import resolve_device

    root = Path(info.path)
    config_file = _config_file(root)
    assert config_file is not None
    dev = resolve_device(str(device))
    parser = ConfigParser()
    parser.read_config(str(config_file))
    parser.read_meta(str(root / "configs" / "metadata.json"))
    parser["bundle_root"] = str(root)
    parser["device"] = dev
    parser.parse(True)
    net = load_bundle_network(root, parser, dev)
    return BundleSegmenter(info, parser, net, dev)


FORMAT = Format(name=NAME, looks_for="configs/metadata.json and configs/inference.json (a MONAI bundle)",
                detect=detect, describe=describe, open=open_bundle)
