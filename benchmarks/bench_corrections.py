"""Does the correction loop teach? A simulated user on the shared BraTS FLAIRs (issue 24).

Start from a segmenter fine-tuned on one labelled case (``--start-minutes``), from scratch and from a pretrained
encoder. Then, for each of three further cases: segment it with the current version, "correct" the prediction by
replacing it with the reference whole tumour, and run one round of the loop
(:func:`napari_ssl.training.corrections.learn_from_correction`: the case stored beside the model, ``--minutes`` of
training continued from its weights on every correction plus the first case, a new version). The control arm
continues the same minutes from the same start without the new cases (the first case only). After each round, the
whole-tumour Dice on the three unseen test cases (the last three by name, never seen) is measured through
:func:`napari_ssl.inference.segment.segment`, as the Segment dock runs it.

    python benchmarks/bench_corrections.py --out runs/corrections              # scratch start only
    python benchmarks/bench_corrections.py --pretrained runs/ssl --out runs/corrections_pre

Writes ``<out>/result.json`` (Dice per round, arm and start; the Dice of each version's prediction on the case
before its correction; seconds) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_brats import CLASSES, DATA, _dice


def _flair(case: Path) -> str:
    return str(case / "flair.nii.gz")


def _truth(case: Path) -> np.ndarray:
    from napari_ssl import io

    return np.isin(io.read(case / "seg.nii.gz").array, (1, 2, 4))


def test_dice(model_dir: str, cases: list[Path]) -> list[float]:
    from napari_ssl import io
    from napari_ssl.inference.segment import load_model, segment

    model = load_model(model_dir, device="cpu")
    return [_dice(segment(io.read(_flair(c)), model).array > 0, _truth(c)) for c in cases]


def run(out: Path, pretrained: str | None, start_minutes: float, minutes: float, threads: int, seed: int,
        data: Path = DATA, only: tuple[str, ...] = ("scratch", "pretrained")) -> dict:
    from napari_ssl import io
    from napari_ssl.inference.segment import load_model, segment
    from napari_ssl.training.config import FinetuneConfig
    from napari_ssl.training.corrections import continue_config, learn_from_correction
    from napari_ssl.training.finetune import finetune

    cases = sorted(p for p in data.iterdir() if p.is_dir())
    test, first, new = cases[-3:], cases[0], cases[1:4]
    common = {"num_threads": threads, "seed": seed, "device": "cpu"}
    starts = {"scratch": None, **({"pretrained": pretrained} if pretrained else {})}
    starts = {k: v for k, v in starts.items() if k in only}
    result: dict = {"first_case": first.name, "new_cases": [c.name for c in new], "test_cases": [c.name for c in test],
                    "start_minutes": start_minutes, "minutes": minutes, "threads": threads, "seed": seed, "runs": {}}
    for start, pre in starts.items():
        t0 = time.perf_counter()
        *_, v1 = finetune(FinetuneConfig(images=(_flair(first),), labels=(str(first / "seg.nii.gz"),),
                                         classes=CLASSES, pretrained=pre, out=str(out / start / "start"),
                                         minutes=start_minutes, **common))
        start_dice = test_dice(v1.path, test)
        print(f"{start}: start model ({time.perf_counter() - t0:.0f} s) test Dice {np.mean(start_dice):.3f}",
              flush=True)
        for arm in ("corrected", "control"):
            line = out / start / arm
            line.mkdir(parents=True, exist_ok=True)
            model = str(line / "model")
            import shutil

            shutil.copytree(v1.path, model)  # each arm its own line (its own corrections folder)
            rows = [{"round": 0, "test_dice": start_dice, "mean": float(np.mean(start_dice))}]
            for r, case in enumerate(new, start=1):
                t = time.perf_counter()
                row: dict = {"round": r, "case": case.name}
                if arm == "corrected":
                    scan = io.read(_flair(case))
                    truth = _truth(case)
                    pred = segment(scan, load_model(model, device="cpu")).array > 0
                    row["dice_before_correction"] = _dice(pred, truth)
                    row["edited_voxels"] = int(np.count_nonzero(pred != truth))
                    events = learn_from_correction(model, [scan], scan.with_array(truth.astype(np.uint8)),
                                                   scan_name=case.name, edited_voxels=row["edited_voxels"],
                                                   minutes=minutes, **common)
                else:
                    nxt = str(line / f"model-v{r + 1}")
                    events = finetune(FinetuneConfig(**continue_config(model, nxt, minutes=minutes, **common)))
                *_, done = events
                model = done.path
                row["steps"] = done.step
                row["test_dice"] = test_dice(model, test)
                row["mean"] = float(np.mean(row["test_dice"]))
                row["seconds"] = round(time.perf_counter() - t, 1)
                rows.append(row)
                print(f"  {start} / {arm} round {r} ({case.name}): test Dice {row['mean']:.3f} "
                      f"{[round(d, 3) for d in row['test_dice']]}"
                      + (f", before correction {row['dice_before_correction']:.3f}" if "dice_before_correction" in row
                         else "") + f" ({row['seconds']:.0f} s, {row['steps']} steps)", flush=True)
            result["runs"][f"{start}/{arm}"] = rows
        (out / "result.json").write_text(json.dumps(result, indent=1))
    print("\n| start | arm | " + " | ".join(f"round {r}" for r in range(len(new) + 1)) + " |")
    print("|---|---|" + "---|" * (len(new) + 1))
    for key, rows in result["runs"].items():
        print(f"| {key.replace('/', ' | ')} | " + " | ".join(f"{row['mean']:.3f}" for row in rows) + " |")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/corrections"))
    parser.add_argument("--pretrained", help="a pretraining checkpoint: the pretrained start (default: scratch only)")
    parser.add_argument("--start-minutes", type=float, default=5.0, help="training of the 1-case start model")
    parser.add_argument("--minutes", type=float, default=2.0, help="each round's continued training")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (default: every core)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--starts", default="scratch,pretrained", help="which starts to run (with --pretrained)")
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    run(args.out, args.pretrained, args.start_minutes, args.minutes, args.threads or len(os.sched_getaffinity(0)),
        args.seed, args.data, tuple(args.starts.split(",")))


if __name__ == "__main__":
    main()
