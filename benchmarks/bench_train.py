"""Benchmark of the pretraining engine against a bare MONAI loop, in one process (ratios, not timed tests).

1. Step time: our training step (``engine._Trainer.train_step``: batch dict, pretext losses, autocast and
   scaler wrappers) against a bare MONAI loop (BasicUNet + MSE + AdamW) with the same network, batch and
   patch, both fed the same on-device tensors. Goal: ours <= 1.05x the bare loop's time per step.
2. Data: throughput of the data loader (``PretextDataset`` through a ``DataLoader`` with the engine's worker
   count) against what the step consumes. Goal: >= 2x.
3. On CUDA: samples/s with AMP (bf16) and channels_last_3d, and model FLOP utilisation (FLOPs counted with
   ``torch.utils.flop_counter`` over one step, against the GPU's dense bf16 peak given by ``--peak-tflops``).

Usage::

    python benchmarks/bench_train.py                       # CPU: small backbone, 2 x 48^3
    python benchmarks/bench_train.py --sizes tiny small medium --patch 48
    python benchmarks/bench_train.py --device cuda --backbone large --patch 96 --batch 4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("NAPARI_SSL_DATA", REPO.parent / "shared" / "data"))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_steps(step, n: int, warmup: int, device: torch.device) -> list[float]:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(n):
        _sync(device)
        t = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t)
    return times


def make_trainer(args: argparse.Namespace, backbone: str, device: str, amp: bool, channels_last: bool):
    from napari_ssl.engine import PretrainConfig, _Trainer

    config = PretrainConfig(
        pretexts=("context",),
        data=(str(DATA / "ct_unlabeled"),),
        out="/tmp/napari-ssl-bench",
        steps=10**6,
        batch_size=args.batch,
        patch_size=args.patch,
        backbone=backbone,
        device=device,
        num_threads=args.threads,
        amp=amp,
        channels_last=channels_last,
        save_every=0,
        val_samples=0,
        num_workers=args.workers,
    )
    trainer = _Trainer(config)
    trainer._setup()
    return trainer


def bench_step(
    args: argparse.Namespace, backbone: str, device_name: str, amp: bool = False, channels_last: bool = False
):
    """(ours s/step, bare s/step, trainer) for the same network, batch and patch."""
    from monai.networks.nets import BasicUNet

    trainer = make_trainer(args, backbone, device_name, amp, channels_last)
    device = trainer.device
    b, p = args.batch, args.patch
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, 1, p, p, p, generator=g).to(device)
    y = torch.randn(b, 1, p, p, p, generator=g).to(device)
    if trainer.use_channels_last:
        x, y = (t.contiguous(memory_format=torch.channels_last_3d) for t in (x, y))
    batch = {"context.input": x, "context.target": y}

    ours = _time_steps(lambda: trainer.train_step(batch), args.steps, args.warmup, device)

    torch.manual_seed(0)
    spec = trainer.spec.spec3d
    net = BasicUNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=1,
        features=spec.features,
        norm=("instance", {"affine": True}),
        upsample=spec.upsample,
    ).to(device)
    if trainer.use_channels_last:
        net = net.to(memory_format=torch.channels_last_3d)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-5)
    dtype = trainer.amp_dtype

    def bare() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = torch.nn.functional.mse_loss(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        float(loss)  # the engine reads the loss every step too

    bare_times = _time_steps(bare, args.steps, args.warmup, device)
    # interleave a second round of ours so drift in machine load hits both alike
    ours += _time_steps(lambda: trainer.train_step(batch), args.steps, 0, device)
    bare_times += _time_steps(bare, args.steps, 0, device)
    return statistics.median(ours), statistics.median(bare_times), trainer


def bench_loader(trainer, n_batches: int) -> float:
    """Samples/s the engine's DataLoader delivers (after its first batch)."""
    loader = trainer._loader(
        trainer.train_ds, 0, (n_batches + 1) * trainer.config.batch_size, workers=trainer.num_workers
    )
    it = iter(loader)
    next(it)
    t = time.perf_counter()
    count = 0
    for batch in it:
        count += len(next(iter(batch.values())))
    return count / (time.perf_counter() - t)


def flops_per_step(trainer, batch) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        trainer.train_step(batch)
    return float(counter.get_total_flops())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=None, help="backbone sizes (default: --backbone)")
    parser.add_argument("--backbone", default="small")
    parser.add_argument("--patch", type=int, default=48)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: engine default)")
    parser.add_argument("--workers", type=int, default=-1, help="DataLoader workers (-1: engine default)")
    parser.add_argument("--loader-batches", type=int, default=10)
    parser.add_argument(
        "--peak-tflops", type=float, default=989.0, help="GPU dense bf16 peak (H100 SXM: 989)"
    )
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    results = []
    for size in args.sizes or [args.backbone]:
        ours, bare, trainer = bench_step(args, size, args.device)
        samples_per_s = args.batch / ours
        loader = bench_loader(trainer, args.loader_batches)
        row = {
            "device": str(trainer.device),
            "backbone": size,
            "patch": args.patch,
            "batch": args.batch,
            "threads": torch.get_num_threads(),
            "workers": trainer.num_workers,
            "ours_s_per_step": round(ours, 4),
            "bare_s_per_step": round(bare, 4),
            "ratio": round(ours / bare, 3),
            "samples_per_s": round(samples_per_s, 2),
            "loader_samples_per_s": round(loader, 2),
            "loader_over_step": round(loader / samples_per_s, 2),
        }
        if trainer.device.type == "cuda":
            ours_amp, bare_amp, amp_trainer = bench_step(
                args, size, args.device, amp=True, channels_last=True
            )
            g = torch.Generator().manual_seed(0)
            p = args.patch
            x = torch.randn(args.batch, 1, p, p, p, generator=g).to(amp_trainer.device)
            flops = flops_per_step(amp_trainer, {"context.input": x, "context.target": x})
            row.update(
                amp_bf16_channels_last_s_per_step=round(ours_amp, 4),
                amp_ratio_vs_bare=round(ours_amp / bare_amp, 3),
                amp_samples_per_s=round(args.batch / ours_amp, 2),
                tflop_per_step=round(flops / 1e12, 3),
                mfu=round(flops / ours_amp / (args.peak_tflops * 1e12), 4),
            )
        trainer.close()
        results.append(row)
        print(json.dumps(row), flush=True)

    print()
    print(
        f"{'backbone':8} {'ours s/step':>11} {'bare s/step':>11} {'ratio':>6} {'samples/s':>9} {'loader/step':>11}"
    )
    for r in results:
        print(
            f"{r['backbone']:8} {r['ours_s_per_step']:11.4f} {r['bare_s_per_step']:11.4f} {r['ratio']:6.3f} "
            f"{r['samples_per_s']:9.2f} {r['loader_over_step']:11.2f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    _ = np  # numpy is imported for the data pipeline's sake
    return 0


if __name__ == "__main__":
    sys.exit(main())
