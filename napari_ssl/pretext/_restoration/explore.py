"""How the Pretext explorer draws a restoration network's answer (context restoration, Models Genesis), in plain data:
the restored volume and the original side by side with the corrupted preview, and the canvas lines with the PSNRs.
``result`` is the dock's answer on one preview (``result.preview``, ``result.path``, ``result.result`` from
:func:`~napari_ssl.pretext._restoration.answer.answer_restoration`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_ssl.pretext._explore import SEP, panel_offset, placement, shifted

__all__ = ["restoration_specs", "restoration_text"]


def restoration_specs(viewer: Any, result: Any, source_layer: Any) -> list[tuple]:
    """The restored volume one panel to the right of the scan (where the corrupted preview lies), the
    original one panel further."""
    source = result.preview.request.source
    place = placement(source_layer)
    step = panel_offset(viewer, source_layer)
    image_kw: dict[str, Any] = {"colormap": "gray", "blending": "translucent"}
    limits = getattr(source_layer, "contrast_limits", None)
    if limits is not None:
        image_kw["contrast_limits"] = tuple(limits)
    original = np.asarray(result.preview.request.volume.array)
    return [
        (f"{source}{SEP}network restored", "image", result.result["restored"],
         {**shifted(place, step), **image_kw}, "restored"),
        (f"{source}{SEP}network original", "image", original, {**shifted(place, 2 * step), **image_kw}, "original"),
    ]


def restoration_text(result: Any, label: str) -> str:
    """Canvas lines of a restoration answer: the three panels and their PSNRs."""
    r = result.result
    return (
        f"Network {Path(result.path).name}: {label}. PSNR vs the original:\n"
        f"left, corrupted input: {r['psnr_input']:.1f} dB ({r['psnr_input_patches']:.1f} in the boxes)\n"
        f"middle, restored: {r['psnr']:.1f} dB ({r['psnr_patches']:.1f} in the boxes)\n"
        f"right: the original. Gain {r['psnr_gain']:+.1f} dB"
    )
