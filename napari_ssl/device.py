"""Device discovery: ``auto`` = CUDA, then MPS, then CPU; the list of devices by name (for the GUI too).

torch is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def available_devices() -> list[str]:
    """Names accepted by :func:`resolve_device`, best first: ``["auto", "cuda:0", ..., "mps", "cpu"]``."""
    import torch

    names = ["auto"]
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available():
        names.append("mps")
    names.append("cpu")
    return names


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device for ``name`` (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``).

    ``auto`` picks CUDA, then MPS, then CPU. An unavailable device raises ``ValueError`` naming the
    devices that are available.
    """
    import torch

    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", 0)
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {name!r}; available: {', '.join(available_devices())}") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} is not available; available: {', '.join(available_devices())}")
        index = 0 if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise ValueError(
                f"device {name!r} is not available: {torch.cuda.device_count()} CUDA device(s); "
                f"available: {', '.join(available_devices())}"
            )
        return torch.device("cuda", index)
    if device.type == "mps" and not _mps_available():
        raise ValueError(f"device 'mps' is not available; available: {', '.join(available_devices())}")
    if device.type not in {"cpu", "cuda", "mps"}:
        raise ValueError(f"unsupported device {name!r}; available: {', '.join(available_devices())}")
    return device


def describe_device(device: torch.device | str) -> str:
    """A readable name: ``"cuda:0 (NVIDIA H100)"``, ``"mps"``, ``"cpu (16 threads)"``."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        index = 0 if device.index is None else device.index
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return str(device)


def autocast_dtype(device: torch.device | str, amp: bool = True) -> torch.dtype | None:
    """Mixed-precision dtype for ``device``, or ``None`` for float32.

    CUDA: bfloat16 where supported, else float16. CPU: bfloat16 where the CPU computes it natively (AVX512-BF16 or
    AMX; oneDNN's convolutions then run ~2x faster with ``channels_last_3d``), else ``None``. The environment
    variable ``NAPARI_SSL_AMP=0`` (or ``amp=False``) keeps float32 everywhere.
    """
    import torch

    if not amp or os.environ.get("NAPARI_SSL_AMP", "1") == "0":
        return None
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        try:
            native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):  # pragma: no cover - builds without oneDNN
            native = False
        return torch.bfloat16 if native else None
    return None


def cpu_channels_last(device: torch.device | str, amp_dtype: torch.dtype | None) -> bool:
    """``channels_last_3d`` on a CPU goes with bfloat16: oneDNN's fast convolutions need both (training and
    inference follow this one rule)."""
    import torch

    return torch.device(device).type == "cpu" and amp_dtype is not None


def available_cores() -> int:
    """CPU cores this process may run on (its affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return os.cpu_count() or 1


def default_num_threads(leave_free: int = 1) -> int:
    """CPU threads for training that leave ``leave_free`` cores to the GUI (at least 1 thread)."""
    return max(1, available_cores() - leave_free)


def data_workers(device_type: str, cores: int | None = None) -> int:
    """Workers that prepare training samples beside the step: up to 8 beside a GPU (two cores left to the step's
    process and the GUI); on a CPU, whose step needs the cores, none on 2 cores, else a quarter of them (at most 4)."""
    cores = available_cores() if cores is None else int(cores)
    if device_type == "cuda":
        return max(0, min(8, cores - 2))
    return 0 if cores <= 2 else min(4, cores // 4)


def default_backbone(device: torch.device | str) -> str:
    """Backbone size that keeps a step around a second: ``small`` on CPU, ``medium`` on MPS, ``large`` on CUDA."""
    import torch

    kind = torch.device(device).type
    return {"cuda": "large", "mps": "medium"}.get(kind, "small")


#: pretraining's patch edge (voxels) per device kind for the default backbone; the CPU's for any other kind
PATCH_EDGE = {"cpu": 48, "cuda": 96, "mps": 64}


def patch_for(kind: str) -> int:
    """Pretraining's patch edge on a device of ``kind`` (``"cpu"``, ``"cuda"``, ``"mps"``; torch-free, so the
    docks show the defaults a run will use without importing torch)."""
    return PATCH_EDGE.get(str(kind).split(":", 1)[0], PATCH_EDGE["cpu"])


def default_patch_size(device: torch.device | str) -> int:
    """Patch edge (voxels) for the default backbone: 48 on CPU (~0.7 s a step of 2 on one core), 96 on CUDA."""
    import torch

    return patch_for(torch.device(device).type)
