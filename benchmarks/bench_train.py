"""Benchmark of the one training loop against a bare MONAI loop, in one process (ratios, not timed tests).

Both tasks run through :class:`napari_ssl.training.trainer.Trainer`: pretraining (context restoration) and fine-tuning
(a BraTS case, whole tumour, with the plan's augmentation).

1. Step time: our training step (``Trainer.train_step``: schedule, task losses, autocast and scaler wrappers)
   against a bare MONAI loop (BasicUNet + MSE, or + DiceCELoss for fine-tuning, and AdamW) with the same network,
   batch and patch, both fed the same on-device tensors. Goal: ours <= 1.05x the bare loop's time per step.
2. Data: throughput of the task's batches (pretraining: ``PretextDataset`` through a ``DataLoader``; fine-tuning:
   the MONAI patch sampler with foreground oversampling and augmentation) against what the step consumes.
   Goal: >= 2x.
3. On a CPU that computes bfloat16: the same step in bfloat16 with channels_last_3d (ours and bare alike) and its
   speed-up over float32. On CUDA: samples/s with AMP (bf16; the trainer's default, without channels_last_3d), and model FLOP utilisation (FLOPs counted with
   ``torch.utils.flop_counter`` over one step, against the GPU's dense bf16 peak given by ``--peak-tflops``).

Usage::

    python benchmarks/bench_train.py                       # CPU: small backbone, 2 x 48^3, both tasks
    python benchmarks/bench_train.py --task finetune --patch 64
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


def make_trainer(args: argparse.Namespace, backbone: str, device: str, amp: bool, channels_last: bool, task: str):
    from napari_ssl.training.trainer import LoopSettings, Trainer

    out = f"/tmp/napari-ssl-bench-{task}"
    settings = LoopSettings(steps=10**6, out=out, device=device, num_threads=args.threads, amp=amp,
                            channels_last=channels_last, schedule="poly" if task == "finetune" else "constant")
    if task == "pretrain":
        from napari_ssl.training.pretrain import PretrainConfig, PretrainTask

        config = PretrainConfig(
            pretexts=("context",), data=(str(DATA / "ct_unlabeled"),), out=out, steps=10**6, batch_size=args.batch,
            patch_size=args.patch, backbone=backbone, device=device, num_threads=args.threads, amp=amp,
            channels_last=channels_last, save_every=0, val_samples=0, num_workers=args.workers,
        )
        trainer = Trainer(PretrainTask(config), settings)
    else:
        from napari_ssl.training.finetune import FinetuneConfig, FinetuneTask

        case = sorted(p for p in (DATA / "brats").iterdir() if p.is_dir())[0]
        config = FinetuneConfig(
            images=(str(case / "flair.nii.gz"),), labels=(str(case / "seg.nii.gz"),), classes="whole_tumor=1+2+4",
            out=out, steps=10**6, batch_size=args.batch, patch_size=args.patch, backbone=backbone, device=device,
            num_threads=args.threads, amp=amp, val_fraction=0.0,
        )
        trainer = Trainer(FinetuneTask(config), settings)
    trainer._setup()
    return trainer


def bench_step(args: argparse.Namespace, backbone: str, device_name: str, task: str, amp: bool = False,
               channels_last: bool = False):
    """(ours s/step, bare s/step, trainer) for the same network, batch and patch."""
    from monai.losses import DiceCELoss
    from monai.networks.nets import BasicUNet

    trainer = make_trainer(args, backbone, device_name, amp, channels_last, task)
    device = trainer.device
    b, p = args.batch, args.patch
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, 1, p, p, p, generator=g).to(device)
    if task == "pretrain":
        y = torch.randn(b, 1, p, p, p, generator=g).to(device)
        batch = {"context.input": x, "context.target": y}
        spec, out_channels = trainer.task.spec.spec3d, 1
    else:
        y = (torch.rand(b, 1, p, p, p, generator=g) < 0.1).long().to(device)
        batch = {"image": x, "label": y}
        spec, out_channels = trainer.task.spec, 2
    if trainer.use_channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
        batch = {k: (v.contiguous(memory_format=torch.channels_last_3d) if v.is_floating_point() else v)
                 for k, v in batch.items()}

    ours = _time_steps(lambda: trainer.train_step(batch), args.steps, args.warmup, device)

    torch.manual_seed(0)
    net = BasicUNet(spatial_dims=3, in_channels=1, out_channels=out_channels, features=spec.features,
                    norm=("instance", {"affine": True}), upsample=spec.upsample).to(device)
    if trainer.use_channels_last:
        net = net.to(memory_format=torch.channels_last_3d)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-5)
    dtype = trainer.amp_dtype
    dice_ce = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)

    def bare() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = net(x)
        loss = torch.nn.functional.mse_loss(out.float(), y) if task == "pretrain" else dice_ce(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        float(loss)  # the loop reads the loss every step too

    bare_times = _time_steps(bare, args.steps, args.warmup, device)
    # interleave a second round of ours so drift in machine load hits both alike
    ours += _time_steps(lambda: trainer.train_step(batch), args.steps, 0, device)
    bare_times += _time_steps(bare, args.steps, 0, device)
    return statistics.median(ours), statistics.median(bare_times), trainer


def bench_loader(trainer, n_batches: int) -> float:
    """Samples/s the task's batches arrive at (after the first batch)."""
    it = iter(trainer.task.batches(0))
    next(it)
    t = time.perf_counter()
    count = 0
    for _ in range(n_batches):
        batch = next(it)
        count += len(next(iter(batch.values())))
    if hasattr(it, "close"):
        it.close()
    return count / (time.perf_counter() - t)


def count_flops(call) -> float:
    """FLOPs of running ``call()`` once, counted by ``torch.utils.flop_counter`` (the benchmarks' one counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        call()
    return float(counter.get_total_flops())


def flops_per_step(trainer, batch) -> float:
    return count_flops(lambda: trainer.train_step(batch))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=None, help="backbone sizes (default: --backbone)")
    parser.add_argument("--task", nargs="+", default=["pretrain", "finetune"], choices=("pretrain", "finetune"))
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

    from napari_ssl.device import autocast_dtype

    results = []
    for task, size in [(t, z) for t in args.task for z in (args.sizes or [args.backbone])]:
        ours, bare, trainer = bench_step(args, size, args.device, task)
        samples_per_s = args.batch / ours
        loader = bench_loader(trainer, args.loader_batches)
        row = {
            "task": task,
            "device": str(trainer.device),
            "backbone": size,
            "patch": args.patch,
            "batch": args.batch,
            "threads": torch.get_num_threads(),
            "workers": getattr(trainer.task, "num_workers", 0) or getattr(trainer.task, "loader_threads", 0),
            "ours_s_per_step": round(ours, 4),
            "bare_s_per_step": round(bare, 4),
            "ratio": round(ours / bare, 3),
            "samples_per_s": round(samples_per_s, 2),
            "loader_samples_per_s": round(loader, 2),
            "loader_over_step": round(loader / samples_per_s, 2),
        }
        if trainer.device.type == "cpu" and autocast_dtype("cpu") is not None:  # the CPU's bfloat16 path
            ours_amp, bare_amp, amp_trainer = bench_step(args, size, args.device, task, amp=True)
            row.update(amp_bf16_channels_last_s_per_step=round(ours_amp, 4), amp_ratio_vs_bare=round(ours_amp / bare_amp, 3),
                       amp_samples_per_s=round(args.batch / ours_amp, 2),
                       amp_speedup_vs_float32=round(ours / ours_amp, 2))
            amp_trainer.close()
        if trainer.device.type == "cuda":
            # channels_last_3d stays off: on an H200 it made this network's bf16 step 1.3x slower (bench_gpu_step.py)
            ours_amp, bare_amp, amp_trainer = bench_step(args, size, args.device, task, amp=True)
            g = torch.Generator().manual_seed(0)
            p = args.patch
            x = torch.randn(args.batch, 1, p, p, p, generator=g).to(amp_trainer.device)
            fake = ({"context.input": x, "context.target": x} if task == "pretrain"
                    else {"image": x, "label": (x > 1).long()})
            flops = flops_per_step(amp_trainer, fake)
            row.update(
                amp_bf16_s_per_step=round(ours_amp, 4),
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
        f"{'task':8} {'backbone':8} {'ours s/step':>11} {'bare s/step':>11} {'ratio':>6} {'samples/s':>9} {'loader/step':>11}"
    )
    for r in results:
        print(
            f"{r['task']:8} {r['backbone']:8} {r['ours_s_per_step']:11.4f} {r['bare_s_per_step']:11.4f} {r['ratio']:6.3f} "
            f"{r['samples_per_s']:9.2f} {r['loader_over_step']:11.2f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    _ = np  # numpy is imported for the data pipeline's sake
    return 0


if __name__ == "__main__":
    sys.exit(main())
