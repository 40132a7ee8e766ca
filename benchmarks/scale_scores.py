"""``bench_scale.py --scores``: do pretext scores stay the same with the prepared dataset (issue 22)?

The protocol of docs/study_brats.md's score targets: ``napari-ssl pretrain`` for ``--score-steps`` (300) steps with
the defaults (one thread, CPU) on the first 10 sorted shared BraTS FLAIRs, once with ``--cache`` (the prepared
dataset, shared by the runs) and once with ``--no-cache`` (in RAM, the path before issue 22), for each pretext of
``--score-pretexts`` and each seed of ``--score-seeds``; then ``napari-ssl score --samples 256`` on the 3 test FLAIRs
(the last three). A metric is "within seed noise" when the two paths' means over the seeds differ by no more than
the larger spread between seeds of one path. Writes ``ROOT/scores/scores.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from proc_measure import DATA, REPO


def _cli(args: list[str], log: Path) -> str:
    res = subprocess.run([sys.executable, "-m", "napari_ssl.cli", *args], cwd=REPO, capture_output=True, text=True)
    log.write_text(res.stdout + res.stderr, encoding="utf-8")
    if res.returncode:
        raise SystemExit(f"napari-ssl {args[0]} failed (exit {res.returncode}); see {log}")
    return res.stdout


def run_scores(args: argparse.Namespace, train: list[str] | None = None,
               test: list[str] | None = None) -> dict[str, Any]:
    """The protocol above (``train`` and ``test`` scans given: on them instead, e.g. a smoke test's)."""
    if train is None or test is None:
        flairs = sorted(str(p) for p in (DATA / "brats").glob("*/flair.nii.gz"))
        if len(flairs) < 13:
            raise SystemExit(f"expected 13 BraTS FLAIRs under {DATA / 'brats'}, found {len(flairs)}")
        train, test = flairs[:10], flairs[-3:]
    root = args.root / "scores"
    root.mkdir(parents=True, exist_ok=True)
    out_file = root / "scores.json"
    res: dict[str, Any] = json.loads(out_file.read_text()) if out_file.is_file() else {}
    res["protocol"] = {"train": train, "test": test, "steps": args.score_steps, "samples": args.score_samples}
    for pretext in args.score_pretexts:
        for seed in args.score_seeds:
            for mode in ("cache", "no-cache"):
                out = root / f"{pretext}_seed{seed}_{mode}"
                shutil.rmtree(out, ignore_errors=True)
                where = ["--cache", str(root / "prepared")] if mode == "cache" else ["--no-cache"]
                _cli(["pretrain", "--pretext", pretext, "--data", *train, "--out", str(out), "--steps",
                      str(args.score_steps), "--seed", str(seed), "--device", "cpu", "--threads", "1",
                      "--save-every", "0", "--quiet", *where], root / f"{out.name}.pretrain.log")
                line = _cli(["score", "--model", str(out), "--data", *test, "--samples", str(args.score_samples),
                             "--device", "cpu"], root / f"{out.name}.score.log").strip().splitlines()[-1]
                res.setdefault(pretext, {}).setdefault(mode, {})[str(seed)] = json.loads(line)
                print(f"scores: {pretext} seed {seed} {mode}: {line}", flush=True)
                out_file.write_text(json.dumps(res, indent=1))
    print_scores(res, args.score_pretexts)
    return res


def print_scores(res: dict[str, Any], pretexts: list[str]) -> None:
    print(f"\n{'metric':34s} {'cache (seeds)':>22s} {'in RAM (seeds)':>22s} {'|diff|':>8s} {'noise':>8s}  within")
    for pretext in pretexts:
        cache, ram = res.get(pretext, {}).get("cache", {}), res.get(pretext, {}).get("no-cache", {})
        seeds = sorted(set(cache) & set(ram))
        if not seeds:
            continue
        for metric in cache[seeds[0]]:
            a = [cache[s][metric] for s in seeds]
            b = [ram[s][metric] for s in seeds]
            diff = abs(sum(a) / len(a) - sum(b) / len(b))
            noise = max(max(a) - min(a), max(b) - min(b))
            print(f"{metric:34s} {' '.join(f'{v:.4g}' for v in a):>22s} "
                  f"{' '.join(f'{v:.4g}' for v in b):>22s} {diff:8.4g} {noise:8.4g}  "
                  f"{'yes' if diff <= noise else 'NO'}")
