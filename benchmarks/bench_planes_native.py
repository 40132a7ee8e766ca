"""Imaging planes on the native cardiac exam: held-out angle error and slice-position error, trained vs untrained.

The shared exam (``cardiac_views/056B``: 2-/4-chamber localizers, an 8-slice short-axis stack, four 25-frame cines)
trains the planes network on its training views (``napari_ssl.pretext.planes.native``: every 5th cine frame and
short-axis slices 2 and 5 held out); ``score`` then measures it on the held-out views only. The same network at step
0 (one step at lr 1e-12) is the reference that gives the numbers a meaning.

    python benchmarks/bench_planes_native.py --minutes 4 --out runs/planes_native
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cardiac_views" / "056B"


def _run(out: Path, steps: int, lr: float, minutes: float | None, args: argparse.Namespace) -> dict:
    from napari_ssl import events
    from napari_ssl.study.score import score
    from napari_ssl.training.config import PretrainConfig
    from napari_ssl.training.pretrain import pretrain

    cfg = PretrainConfig(pretexts=("planes",), data=(str(DATA),), out=str(out), steps=steps, lr=lr, minutes=minutes,
                         batch_size=args.batch_size, patch_size=args.size, backbone=args.backbone, device=args.device,
                         seed=args.seed, val_samples=args.samples, save_every=0)
    t0 = time.perf_counter()
    finished = None
    for event in pretrain(cfg):
        if isinstance(event, events.Finished):
            finished = event
    train_s = time.perf_counter() - t0
    assert finished is not None
    meta = json.loads((out / "meta.json").read_text())
    loss = meta["history"]["loss"]
    k = max(1, min(20, len(loss) // 5))
    result = score(out, [str(DATA)], samples=args.samples, seed=args.seed, device=args.device)
    return {"steps": finished.step, "train_s": round(train_s, 1), "loss_first": sum(loss[:k]) / k,
            "loss_last": sum(loss[-k:]) / k, "held_out_score": result, "end_of_run_metrics": finished.metrics}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--size", type=int, default=64, help="plane image size (the --patch-size)")
    parser.add_argument("--backbone", default="tiny")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--samples", type=int, default=64, help="held-out samples scored")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("runs/planes_native"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    untrained = _run(args.out / "step0", 1, 1e-12, None, args)
    trained = _run(args.out / "trained", 100_000, 1e-3, args.minutes, args)
    print(json.dumps({"size": args.size, "backbone": args.backbone, "minutes": args.minutes,
                      "untrained": untrained, "trained": trained}, indent=1))


if __name__ == "__main__":
    main()
