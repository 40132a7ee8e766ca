"""Pretraining at scale (issue 22): memory, loader speed, preparation and restart on 10, 100 and 1,000+ scans.

Synthetic scans made deterministically from the shared ones (``scale_scans.py``: random affine and intensity change,
CT-like 256x256x200 at 1.5 mm or MR-like 160x192x192 at 1 mm), in stages::

    python benchmarks/bench_scale.py --root /tmp/scale --kind mr --ns 10 100 1000 --steps 40 --plot docs/scale.png
    python benchmarks/bench_scale.py --scores --root /tmp/scale       # the pretext scores, cache vs in RAM

- ``make``: scans ``0 .. max(ns)-1`` in ``ROOT/<kind>_<x>x<y>x<z>/scans`` (a process pool of ``--workers``;
  resumable), after an estimate of the disk the run takes (refused when it would leave under 10 GB free).
- ``prepare``: the prepared dataset of the first ``--prep-subset`` scans built with 1 worker and with ``--workers``
  (``napari_ssl.training.prepared.prepare_dataset``, each worker one thread, the plan's spacing and normalisation):
  seconds per scan, parallel efficiency, bytes per scan (source and prepared); the caches are removed after.
- ``train``: for each N, ``napari-ssl pretrain`` (``--backbone``, ``--steps``, CPU) on a folder of links to the first N
  scans with its own ``--cache`` (built by this run: the first run prepares every scan), the USS of the whole process
  tree sampled every 0.2 s (``proc_measure.TreeSampler``), the seconds from the start to the prepared dataset, to
  ``Started`` and to the first step, and the training's samples/s (the progress bar's last rate); then the loader
  alone in a fresh process: the pretraining task's DataLoader built as training builds it (same arguments),
  iterated for ``--loader-batches`` batches past the samples the run trained on, without the network.
- ``second``: the same command again on the unchanged folder and cache; the cache of N is removed afterwards
  (``--keep-caches`` keeps them).

Every figure goes to ``--out`` (JSON, merged with an earlier run's), the plot to ``--plot``; a table of the targets
with pass / FAIL is printed at the end. Timings are only comparable on an otherwise idle machine (the table says
when the load average showed other work).

Expected for MR-like N = 1,000 on 2 cores, from single scans made and prepared at full size (not yet a run): a scan
takes ~0.6 s to make (one core) and ~0.2 s to prepare; 1.9-2.4 MB a source file, ~11 MB prepared (the CPU plan
resamples to ~1.4 mm: a 137x137x114 grid). Making 1,000: ~5 min; preparing them: ~2 min on 2 cores; disk: ~2.4 GB
of scans plus ~11 GB for the largest cache alive at once (~13 GB with ``--keep-caches``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from proc_measure import REPO, TreeSampler, dir_size
from scale_report import plot, print_targets
from scale_scans import init_worker, kinds, link_first, make_one, make_scans, scan_name

MIN_FREE = 10e9
PROGRESS = re.compile(r"\] (\d+)/(\d+) loss .* ([\d.]+) samples/s")
PREPARED = re.compile(r"preparing scans in .*: (\d+)/(\d+) \((\d+) built")

LOADER = r"""
import argparse, json, sys, time
t0 = time.perf_counter()
from types import SimpleNamespace
import torch
from napari_ssl.commands.pretrain import add_arguments, build_config
from napari_ssl.device import default_num_threads, resolve_device
from napari_ssl.training.pretrain import PretrainTask
skip, batches, least_s = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
parser = argparse.ArgumentParser()
add_arguments(parser)
config = build_config(parser.parse_args(sys.argv[4:]))
torch.set_num_threads(config.num_threads or default_num_threads(leave_free=0))  # as the Trainer does
task = PretrainTask(config)
trainer = SimpleNamespace(device=resolve_device(config.device), world=1, rank=0)
for _ in task.prepare(trainer):
    pass
task.setup(trainer)
ready = time.perf_counter() - t0
batches_of = iter(task.batches(skip))
next(batches_of)  # the workers started, the first batch
t1 = time.perf_counter()
n = k = 0
while k < batches or time.perf_counter() - t1 < least_s:  # at least so many batches and seconds
    n += len(next(iter(next(batches_of).values())))
    k += 1
seconds = time.perf_counter() - t1
print(json.dumps({"samples_per_s": n / seconds, "samples": n, "batches": k, "seconds": seconds,
                  "batch_size": task.batch_size, "workers": task.num_workers, "ready_s": ready,
                  "built": task.prepared.built}))
"""

PREPARE = r"""
import json, sys, time
from napari_ssl.plan import make_plan
from napari_ssl.training import prepared as prep
data, cache, fingerprints, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
plan = make_plan(prep.sampled_fingerprint(prep.find_sources([data])[0], fingerprints), "cpu")
t0 = time.perf_counter()
ds = prep.prepare_dataset([data], plan.spacing, plan.normalization, cache, workers=workers)
print(json.dumps({"seconds": time.perf_counter() - t0, "built": ds.built, "scans": len(ds.scans),
                  "spacing": list(plan.spacing), "shape": list(ds.scans[0].shape)}))
"""


# ---------------------------------------------------------------- helpers
class Layout:
    """Where a kind at a size keeps its files: ``ROOT/<kind>_<x>x<y>x<z>/``."""

    def __init__(self, root: Path, kind: str, size: tuple[int, int, int]) -> None:
        self.root = root / f"{kind}_{'x'.join(str(s) for s in size)}"
        self.scans = self.root / "scans"

    def data(self, n: int) -> Path:
        return self.root / f"n{n}"

    def cache(self, n: int) -> Path:
        return self.root / f"cache_n{n}"

    def out(self, n: int, run: str) -> Path:
        return self.root / "runs" / f"n{n}_{run}"


def child_env(one_thread: bool = False) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    if one_thread:
        for name in ("OMP_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "OPENBLAS_NUM_THREADS"):
            env[name] = "1"
    return env


def stop(proc: subprocess.Popen[str]) -> None:
    """End a child still running (this benchmark stopped): Ctrl-C first, as a user would, so it cleans up."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def python_json(code: str, argv: list[str], *, one_thread: bool = False) -> tuple[dict[str, Any], TreeSampler]:
    """Run ``code`` in a fresh Python; its last stdout line (JSON) and the memory of its process tree."""
    proc = subprocess.Popen([sys.executable, "-c", code, *argv], cwd=REPO, env=child_env(one_thread),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = TreeSampler(proc.pid).start()
    try:
        out, err = proc.communicate()
    finally:
        stop(proc)
        sampler.stop()
    if proc.returncode:
        raise SystemExit(f"a benchmark child failed (exit {proc.returncode}):\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1]), sampler


def pretrain_args(args: argparse.Namespace, data: Path, cache: Path, out: Path, steps: int) -> list[str]:
    extra = ["--workers", str(args.loader_workers)] if args.loader_workers is not None else []
    return ["--pretext", args.pretext, "--data", str(data), "--cache", str(cache), "--out", str(out),
            "--steps", str(steps), "--backbone", args.backbone, "--device", "cpu", "--save-every", "0",
            "--val-samples", "2", "--seed", str(args.seed), *extra]


def run_pretrain(argv: list[str], log: Path) -> dict[str, Any]:
    """``napari-ssl pretrain`` in a child process: its times (from the start), rates and tree memory."""
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "napari_ssl.cli", "pretrain", *argv]
    proc = subprocess.Popen(cmd, cwd=REPO, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)
    sampler = TreeSampler(proc.pid).start()
    res: dict[str, Any] = {"command": " ".join(["napari-ssl pretrain", *argv]), "load_before": os.getloadavg()[0]}
    rates = []
    assert proc.stdout is not None
    try:
        with log.open("w", encoding="utf-8") as f:
            for line in proc.stdout:
                t = time.perf_counter() - sampler.t0
                f.write(f"{t:8.2f}  {line}")
                if (m := PREPARED.search(line)) and m[1] == m[2]:
                    res["prepared_s"], res["built"] = t, int(m[3])
                if "pretrain: training on" in line:
                    res["ready_s"] = t
                if m := PROGRESS.search(line):
                    res.setdefault("first_step_s", t)
                    rates.append(float(m[3]))
        rc = proc.wait()
        res["total_s"] = time.perf_counter() - sampler.t0
    finally:
        stop(proc)
        sampler.stop()
    if rc or "first_step_s" not in res:
        raise SystemExit(f"napari-ssl pretrain failed (exit {rc}); see {log}")
    ready = res.get("ready_s", res["first_step_s"])
    res.update(train_samples_per_s=rates[-1], peak_uss=sampler.peak("uss"), peak_pss=sampler.peak("pss"),
               peak_pss_anon=sampler.peak("pss_anon"), peak_uss_before_ready=sampler.peak("uss", end=ready),
               peak_uss_training=sampler.peak("uss", start=ready), peak_processes=sampler.peak("processes"))
    return res


def probe(args: argparse.Namespace, layout: Layout, size: tuple[int, int, int]) -> dict[str, float]:
    """Scan 0 made (if missing) and prepared alone: its seconds and bytes, for the estimates (kept in
    ``probe.json``)."""
    file = layout.root / "probe.json"
    if file.is_file():
        return json.loads(file.read_text())  # type: ignore[no-any-return]
    init_worker()  # one thread, as in the pool
    timed = layout.root / "probe_scan"
    first = layout.scans / scan_name(0)
    where = timed if first.exists() else layout.scans  # made again elsewhere when it exists: its seconds
    made, make_s = make_one(0, kinds()[args.kind], size, str(where), args.seed)
    cache, fingerprints = layout.root / "probe_cache", layout.root / "probe_fingerprints"
    built, _ = python_json(PREPARE, [str(link_first(1, layout.scans, layout.data(1))), str(cache), str(fingerprints),
                                     "1"], one_thread=True)
    out = {"make_s": make_s, "source_bytes": made, "prepare_s": built["seconds"],
           "prepared_bytes": dir_size(cache), "prepared_shape": built["shape"], "prepared_spacing": built["spacing"]}
    for folder in (cache, fingerprints, layout.data(1), timed):
        shutil.rmtree(folder, ignore_errors=True)
    file.write_text(json.dumps(out, indent=1))
    return out


def disk_check(args: argparse.Namespace, layout: Layout, size: tuple[int, int, int], stages: set[str]) -> None:
    """Print what the run will add on disk (and the time to make the scans), from one scan made and prepared;
    refuse (one sentence) when it would leave under :data:`MIN_FREE` free."""
    one = probe(args, layout, size)
    src, prep = one["source_bytes"], one["prepared_bytes"] * 1.02  # + the manifests and fingerprints
    n_max = max(args.ns)
    missing = max(0, n_max - len(list(layout.scans.glob("scan*.nii.gz")))) if "make" in stages else 0
    subset = min(n_max, args.prep_subset or n_max)
    need_prepare = 2 * subset * prep if "prepare" in stages else 0  # both caches removed before training
    cache_ns = [n for n in args.ns if not layout.cache(n).exists()] if "train" in stages else []
    need_train = (sum(cache_ns) if args.keep_caches else max(cache_ns, default=0)) * prep
    need = missing * src + max(need_prepare, need_train)
    free = shutil.disk_usage(layout.root).free
    print(f"disk: {missing} scans to make x {src / 1e6:.2f} MB + prepared caches up to "
          f"{max(need_prepare, need_train) / 1e9:.2f} GB ({prep / 1e6:.2f} MB a scan on the plan's grid "
          f"{one['prepared_shape']}) = {need / 1e9:.2f} GB; {free / 1e9:.1f} GB free in {layout.root}", flush=True)
    if missing:
        cores = os.cpu_count() or 1
        print(f"time: making {missing} scans takes about {missing * one['make_s'] / args.workers / 60:.1f} min "
              f"({one['make_s']:.2f} s a scan, {args.workers} processes); preparing {n_max} about "
              f"{n_max * one['prepare_s'] / cores / 60:.1f} min on {cores} cores ({one['prepare_s']:.2f} s a scan; "
              "each N's first training run prepares its scans)", flush=True)
    if free - need < MIN_FREE:
        fits = int((free - MIN_FREE) // (src + prep)) if free > MIN_FREE else 0
        raise SystemExit(f"refused: this run needs about {need / 1e9:.1f} GB and would leave under "
                         f"{MIN_FREE / 1e9:.0f} GB free of {free / 1e9:.1f} GB (about {fits} scans of this size fit).")


# ---------------------------------------------------------------- stages
def stage_make(args: argparse.Namespace, layout: Layout, size: tuple[int, int, int], res: dict[str, Any]) -> None:
    kind = kinds()[args.kind]
    n_max = max(args.ns)
    disk_check(args, layout, size, set(args.stages))
    print(f"make: {n_max} {args.kind}-like scans of {size} voxels in {layout.scans}", flush=True)
    made = make_scans(n_max, kind, size, layout.scans, workers=args.workers, seed=args.seed)
    res["make"] = {**made, "size_xyz": list(size), "spacing_mm": list(kind.grid(size)[1])}
    print(f"make: {made['made']} made in {made['seconds']:.1f} s ({args.workers} processes), "
          f"{made['bytes'] / 1e9:.2f} GB, {made['bytes_per_scan'] / 1e6:.2f} MB a scan", flush=True)


def stage_prepare(args: argparse.Namespace, layout: Layout, res: dict[str, Any]) -> None:
    subset = min(max(args.ns), args.prep_subset or max(args.ns))
    data = link_first(subset, layout.scans, layout.data(subset))
    out: dict[str, Any] = {"scans": subset, "source_bytes_per_scan": dir_size(layout.scans) / len(
        list(layout.scans.glob("scan*.nii.gz"))), "runs": {}}
    fingerprints = layout.root / "prep_fingerprints"
    for workers in sorted({1, args.workers}):
        cache = layout.root / f"prep_w{workers}"
        shutil.rmtree(cache, ignore_errors=True)
        built, sampler = python_json(PREPARE, [str(data), str(cache), str(fingerprints), str(workers)],
                                     one_thread=True)
        entries = [p for p in cache.iterdir() if (p / "manifest.json").is_file()]
        built.update(s_per_scan=built["seconds"] / subset, peak_uss=sampler.peak("uss"),
                     prepared_bytes_per_scan=sum(dir_size(p) for p in entries) / max(1, len(entries)))
        out["runs"][str(workers)] = built
        print(f"prepare: {subset} scans, {workers} worker(s): {built['seconds']:.1f} s, "
              f"{built['s_per_scan']:.2f} s a scan, {built['prepared_bytes_per_scan'] / 1e6:.1f} MB a scan "
              f"prepared (grid {built['shape']} at {built['spacing']} mm)", flush=True)
        shutil.rmtree(cache, ignore_errors=True)
    shutil.rmtree(fingerprints, ignore_errors=True)
    one, many = out["runs"]["1"]["seconds"], out["runs"][str(args.workers)]["seconds"]
    out["parallel_efficiency"] = one / (args.workers * many)
    print(f"prepare: parallel efficiency on {args.workers} workers {out['parallel_efficiency']:.2f}", flush=True)
    res["prepare"] = out


def stage_train(args: argparse.Namespace, layout: Layout, n: int, run: str, res: dict[str, Any]) -> None:
    data = link_first(n, layout.scans, layout.data(n))
    cache, out = layout.cache(n), layout.out(n, run)
    if run == "second" and not (cache / "sources.json").is_file():
        raise SystemExit(f"no prepared dataset in {cache} for a second run: run the train stage first")
    if run == "first":
        shutil.rmtree(cache, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    r = run_pretrain(pretrain_args(args, data, cache, out, args.steps), layout.root / "logs" / f"n{n}_{run}.log")
    if run == "first":
        r["prepared_bytes"] = dir_size(cache)
        r["prepared_s_per_scan"] = r.get("prepared_s", 0.0) / n
        budget = args.steps + 1_000_000  # a virtual length: never runs out of samples
        loader, _ = python_json(LOADER, [str(args.steps), str(args.loader_batches), str(args.loader_seconds),
                                         *pretrain_args(args, data, cache, out, budget)])
        r["loader"] = loader
    res.setdefault("runs", {}).setdefault(str(n), {})[run] = r
    shutil.rmtree(out, ignore_errors=True)
    loader_text = f", loader alone {r['loader']['samples_per_s']:.1f} samples/s" if "loader" in r else ""
    print(f"{run:6s} N={n:5d}: {r.get('built', 0)} built, first step {r['first_step_s']:.1f} s "
          f"(ready {r.get('ready_s', float('nan')):.1f} s), peak USS {r['peak_uss'] / 2**20:.0f} MiB "
          f"(PSS {r['peak_pss'] / 2**20:.0f}), training "
          f"{r['train_samples_per_s']:.1f} samples/s{loader_text}", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=Path("/tmp/scale"), help="where scans, caches and runs go")
    p.add_argument("--stages", default="make,prepare,train,second", help="make, prepare, train, second (commas)")
    p.add_argument("--ns", type=int, nargs="+", default=[10, 100, 1000], help="numbers of scans")
    p.add_argument("--kind", choices=("mr", "ct"), default="mr")
    p.add_argument("--size", type=int, nargs=3, metavar=("X", "Y", "Z"), help="voxels (default: the kind's)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="processes making scans; the preparation is timed with 1 and with this many")
    p.add_argument("--prep-subset", type=int, default=40, help="scans the prepare stage builds (0: max N)")
    p.add_argument("--steps", type=int, default=40, help="training steps of each run")
    p.add_argument("--pretext", default="context")
    p.add_argument("--backbone", default="tiny")
    p.add_argument("--loader-workers", type=int, help="pretrain --workers (default: its automatic choice)")
    p.add_argument("--loader-batches", type=int, default=30, help="batches the loader alone is timed on (at least)")
    p.add_argument("--loader-seconds", type=float, default=10.0, help="seconds the loader alone is timed (at least)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep-caches", action="store_true", help="keep every N's prepared dataset")
    p.add_argument("--out", type=Path, help="results JSON (default: ROOT/<kind>_<size>/results.json)")
    p.add_argument("--plot", type=Path, help="plot (default: beside the JSON)")
    p.add_argument("--scores", action="store_true", help="only the pretext scores, cache vs in RAM (scale_scores)")
    p.add_argument("--score-steps", type=int, default=300)
    p.add_argument("--score-seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--score-pretexts", nargs="+", default=["context", "rubik", "planes"])
    p.add_argument("--score-samples", type=int, default=256)
    args = p.parse_args(argv)
    args.stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = set(args.stages) - {"make", "prepare", "train", "second"}
    if unknown:
        p.error(f"unknown stage(s) {sorted(unknown)}: choose from make, prepare, train, second")
    args.ns = sorted(set(args.ns))
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a kill stops the children too (finally blocks)
    if args.scores:
        from scale_scores import run_scores

        run_scores(args)
        return
    kind = kinds()[args.kind]
    size = tuple(args.size) if args.size else kind.size
    layout = Layout(args.root, args.kind, size)
    layout.root.mkdir(parents=True, exist_ok=True)
    out = args.out or layout.root / "results.json"
    res: dict[str, Any] = json.loads(out.read_text()) if out.is_file() else {}
    res["config"] = {"kind": args.kind, "size": list(size), "spacing_mm": list(kind.grid(size)[1]),
                     "ns": args.ns, "steps": args.steps, "pretext": args.pretext, "backbone": args.backbone,
                     "cores": os.cpu_count(), "loader_workers": args.loader_workers, "root": str(layout.root)}

    def save() -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=1))

    if "make" in args.stages:
        stage_make(args, layout, size, res)
        save()
    elif len(list(layout.scans.glob("scan*.nii.gz"))) < max(args.ns):
        raise SystemExit(f"fewer than {max(args.ns)} scans in {layout.scans}: run the make stage first")
    else:
        disk_check(args, layout, size, set(args.stages))
    if "prepare" in args.stages:
        stage_prepare(args, layout, res)
        save()
    for n in args.ns:
        for run in ("first", "second"):
            if {"first": "train", "second": "second"}[run] in args.stages:
                stage_train(args, layout, n, run, res)
                save()
        if "second" in args.stages and not args.keep_caches:
            shutil.rmtree(layout.cache(n), ignore_errors=True)
    print_targets(res)
    plot(res, args.plot or out.with_suffix(".png"))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
