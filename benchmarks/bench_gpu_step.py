"""Where a CUDA training step's time goes: precision, memory format, cuDNN autotuning, compilation (one process).

The network is the plan's (MONAI ``BasicUNet``, napari-ssl's ``large`` features, affine instance norm), the batch
the BraTS plan's (2 x 1 x 112 x 144 x 128), the loss Dice + CE, the optimiser AdamW: a bare step, no napari-ssl
code, so each row isolates one setting. Rows are medians of ``--steps`` timed steps after ``--warmup`` steps, with
their model FLOP utilisation against ``--peak-tflops`` (dense bf16; FLOPs counted by ``torch.utils.flop_counter``).

    python benchmarks/bench_gpu_step.py --json gpu_step.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_step(patch, batch, dtype, channels_last, compile_net, features):
    from monai.losses import DiceCELoss
    from monai.networks.nets import BasicUNet

    torch.manual_seed(0)
    net = BasicUNet(spatial_dims=3, in_channels=1, out_channels=2, features=features,
                    norm=("instance", {"affine": True})).cuda()
    fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
    net = net.to(memory_format=fmt)
    run = torch.compile(net) if compile_net else net
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
    x = torch.randn(batch, 1, *patch, device="cuda").contiguous(memory_format=fmt)
    y = (torch.rand(batch, 1, *patch, device="cuda") < 0.05).long()

    def step():
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            out = run(x)
        loss = loss_fn(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    return step, net, x


def timed(step, steps, warmup):
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    from bench_train import count_flops

    from napari_ssl.models.sizes import SIZES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patch", type=int, nargs=3, default=(112, 144, 128))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", default="large")
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow to build)")
    parser.add_argument("--json")
    args = parser.parse_args()
    features = SIZES[args.size]
    rows = [
        ("float32 (TF32 convs)", None, False, False, False),
        ("float32, cudnn.benchmark", None, False, True, False),
        ("bf16", torch.bfloat16, False, False, False),
        ("bf16, cudnn.benchmark", torch.bfloat16, False, True, False),
        ("bf16, channels_last_3d", torch.bfloat16, True, False, False),
        ("bf16, channels_last_3d, cudnn.benchmark", torch.bfloat16, True, True, False),
    ]
    if args.compile:
        rows.append(("bf16, cudnn.benchmark, torch.compile", torch.bfloat16, False, True, True))
    flops = None
    results = []
    for name, dtype, cl, bench, comp in rows:
        torch.backends.cudnn.benchmark = bench
        step, net, x = make_step(args.patch, args.batch, dtype, cl, comp, features)
        if flops is None:
            flops = count_flops(step)
        t0 = time.perf_counter()
        seconds = timed(step, args.steps, args.warmup)
        row = {"setting": name, "s_per_step": round(seconds, 4), "steps_per_s": round(1 / seconds, 2),
               "tflops": round(flops / seconds / 1e12, 1), "mfu": round(flops / seconds / (args.peak_tflops * 1e12), 4),
               "with_warmup_s": round(time.perf_counter() - t0, 1)}
        results.append(row)
        print(json.dumps(row), flush=True)
        del step, net, x
        torch.cuda.empty_cache()
    print(f"{torch.cuda.get_device_name()}: {flops / 1e12:.2f} TFLOP per step, batch {args.batch} x {args.patch}")
    if args.json:
        Path(args.json).write_text(json.dumps({"gpu": torch.cuda.get_device_name(), "tflop_per_step": flops / 1e12,
                                               "patch": args.patch, "batch": args.batch, "rows": results}, indent=1))


if __name__ == "__main__":
    main()
