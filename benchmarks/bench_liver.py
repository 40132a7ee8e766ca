"""Liver on the shared abdominal CT with the default plan: Dice on a held-out slab of slices.

One labelled CT (``ct_organs``): the run holds out the last quarter of its slices (the cranial end), as the
liver test does, and trains on the rest from scratch with every setting from the plan (``--minutes M``). The held-out
Dice is MONAI's, computed by sliding-window inference on the held-out slab: the last validation (the model at the
end) and the best one (the weights the checkpoint keeps; selected on the same slab, so optimistic).

    python benchmarks/bench_liver.py --minutes 5 --out runs/liver
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ct_organs"


def main() -> None:
    from napari_ssl import events
    from napari_ssl.training.finetune import FinetuneConfig, finetune

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/liver"))
    parser.add_argument("--mirror", choices=("auto", "on", "off"), default="auto")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    config = FinetuneConfig(images=(str(DATA / "ct.nii.gz"),), labels=(str(DATA / "labels.nii.gz"),), classes="liver",
                            classes_file=str(DATA / "classes.json"), out=str(args.out / "model"), minutes=args.minutes,
                            val_fraction=0.25, seed=args.seed,
                            mirror={"auto": None, "on": True, "off": False}[args.mirror])
    t0 = time.perf_counter()
    dice: list[tuple[int, float]] = []
    for event in finetune(config):
        if isinstance(event, events.Started):
            print(event.plan_text, flush=True)
        elif isinstance(event, events.Validated):
            dice.append((event.step, event.dice["liver"]))
            print(f"  [{time.perf_counter() - t0:5.0f} s] step {event.step}: held-out liver Dice {dice[-1][1]:.3f}",
                  flush=True)
        elif isinstance(event, events.Finished):
            result = {"minutes": args.minutes, "steps": event.step, "train_s": round(time.perf_counter() - t0, 1),
                      "last_dice": dice[-1][1], "best_dice": max(d for _, d in dice), "dice_by_step": dice}
            (args.out / "result.json").write_text(json.dumps(result, indent=1))
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
