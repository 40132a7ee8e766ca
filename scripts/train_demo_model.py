"""Train the bundled demonstration model: the head phantom's lesion, segmented by a tiny U-Net.

The model ships inside the package (``napari_ssl/models_bundled/phantom_lesion``) so the Segment dock has a model
to click on first launch: *File > Open Sample > napari SSL > Head phantom*, then *Segment*. It is trained by the
project's own fine-tuning (:func:`napari_ssl.training.finetune.finetune`, as ``napari-ssl finetune`` runs it) from scratch
on phantoms of seeds 1-8, validated on seeds 9-10, and scored here on seed 0 (the sample data), which it never
saw. Float32 on one CPU thread with fixed seeds: the same numbers on every run of the same torch build.

Usage (about four minutes on one core)::

    PYTHONPATH=. python scripts/train_demo_model.py            # writes napari_ssl/models_bundled/phantom_lesion
    PYTHONPATH=. python scripts/train_demo_model.py --out /tmp/demo --steps 50

The folder holds ``model.safetensors`` and ``meta.json`` only (the optimizer state is dropped: nothing resumes a
bundled model).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRAIN_SEEDS = tuple(range(1, 9))
VAL_SEEDS = (9, 10)
LESION = 7


def phantoms(seeds: tuple[int, ...]) -> tuple[tuple[object, object], ...]:
    from napari_ssl.phantom import make_phantom

    pairs = []
    for seed in seeds:
        image, labels = make_phantom(seed=seed)
        pairs.append((image, labels))
    return tuple(pairs)


def main(argv: list[str] | None = None) -> int:
    from napari_ssl.inference.bundled import DEMO_DESCRIPTION, PHANTOM_DEMO, bundled_path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=bundled_path(PHANTOM_DEMO), help="model folder")
    parser.add_argument("--steps", type=int, default=300, help="optimisation steps (default 300)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    args = parser.parse_args(argv)

    import numpy as np

    from napari_ssl import checkpoint
    from napari_ssl.inference.segment import load_model, segment
    from napari_ssl.training.finetune import FinetuneConfig, finetune

    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        config = FinetuneConfig(
            pairs=phantoms(TRAIN_SEEDS), val_pairs=phantoms(VAL_SEEDS), classes=f"lesion={LESION}", out=str(run),
            pretrained=None, backbone="tiny", steps=args.steps, patch_size=(32, 64, 64), spacing=(2.5, 1.5, 1.5),
            batch_size=2, lr=5e-3, foreground_ratio=0.5, device="cpu", seed=0, num_threads=args.threads, amp=False,
            augment=False,  # the phantoms of other seeds vary enough; MONAI's gamma / scaling blur lesion vs white matter
            val_every=max(1, args.steps // 8),
        )
        for event in finetune(config):
            name = type(event).__name__
            if name in ("Validated", "Finished"):
                print(f"{name}: {getattr(event, 'dice', None) or getattr(event, 'metrics', '')}", flush=True)
        train_s = time.monotonic() - t0
        state, meta = checkpoint.load(run)
    meta = replace(meta, description=DEMO_DESCRIPTION, train_cases=tuple(f"phantom seed {s}" for s in TRAIN_SEEDS),
                   config={**meta.config, "out": "napari_ssl/models_bundled/phantom_lesion"})
    if args.out.exists():
        shutil.rmtree(args.out)
    checkpoint.save(args.out, state, meta)  # no optimizer state

    from napari_ssl.phantom import make_phantom

    image, labels = make_phantom(seed=0)
    t1 = time.monotonic()
    mask = segment(image, load_model(args.out), overlap=0.5)
    seg_s = time.monotonic() - t1
    truth, found = labels.array == LESION, mask.array == 1
    dice = 2 * np.sum(truth & found) / max(1, truth.sum() + found.sum())
    size = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"wrote {args.out} ({size} bytes); training {train_s:.0f} s on {args.threads} thread(s); "
          f"lesion Dice on the sample phantom (seed 0, unseen) {dice:.3f}; segmenting it took {seg_s:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
