"""Models shipped inside the package, found by a short name (``--model phantom-demo``) as well as by folder.

One for now: ``phantom-demo``, a tiny U-Net that segments the lesion of the sample head phantom
(:func:`napari_ssl.phantom.make_phantom`), trained on phantoms of other seeds by ``scripts/train_demo_model.py``
through the project's own fine-tuning. It is a demonstration model: it has seen synthetic phantoms only, so the
Segment dock has something to run on first launch, and nothing more. No torch here (the dock reads it on the GUI
thread).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["BUNDLED", "DEMO_DESCRIPTION", "PHANTOM_DEMO", "bundled_name", "bundled_path", "resolve_model"]

PHANTOM_DEMO = "phantom-demo"
#: what the dock and the checkpoint's ``meta.json`` say about the demonstration model
DEMO_DESCRIPTION = "demonstration model: trained on synthetic phantoms, for the sample data only"
#: short name -> folder inside the package
BUNDLED: dict[str, str] = {PHANTOM_DEMO: "models_bundled/phantom_lesion"}


def bundled_path(name: str) -> Path:
    """The folder of the bundled model ``name`` (``KeyError`` for an unknown name)."""
    return Path(__file__).resolve().parents[1] / BUNDLED[name]  # napari_ssl/models_bundled/...


def bundled_name(path: str | os.PathLike[str]) -> str | None:
    """The short name of the bundled model at ``path``, or ``None`` for any other folder."""
    try:
        resolved = Path(path).expanduser().resolve()
    except (OSError, RuntimeError):
        return None
    return next((name for name in BUNDLED if bundled_path(name) == resolved), None)


def resolve_model(text: str | os.PathLike[str]) -> Path:
    """A model folder from what a user typed: an existing folder wins, else a bundled model's short name.

    Anything else comes back as the path it names, for the checkpoint reader to refuse in words.
    """
    path = Path(text).expanduser()
    if not path.exists() and str(text).strip() in BUNDLED:
        return bundled_path(str(text).strip())
    return path
