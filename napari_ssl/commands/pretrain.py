"""Self-supervised pretraining (Rubik's cube, context restoration, imaging planes) on scans, with a progress bar.

Examples::

    napari-ssl pretrain --pretext rubik,context --data scans/ --out runs/ssl --steps 2000
    napari-ssl pretrain --resume runs/ssl --steps 4000          # continue the same run
    torchrun --nproc_per_node=4 -m napari_ssl.cli pretrain --pretext context --data scans/ --out runs/ddp

Ctrl-C saves a checkpoint and exits with a one-line message. Settings come from the resumed checkpoint,
then ``--config FILE`` (JSON or TOML with the keys of ``napari_ssl.training.pretrain.PretrainConfig``), then the options.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from napari_ssl.models.sizes import SIZES
from napari_ssl.preprocess import NORMALIZATION_MODES as NORMALIZATIONS

BACKBONES = tuple(SIZES)
# option dest -> PretrainConfig field
_FIELDS = {
    "pretext": "pretexts",
    "data": "data",
    "out": "out",
    "steps": "steps",
    "minutes": "minutes",
    "batch_size": "batch_size",
    "patch_size": "patch_size",
    "backbone": "backbone",
    "device": "device",
    "seed": "seed",
    "resume": "resume",
    "lr": "lr",
    "spacing": "spacing",
    "save_every": "save_every",
    "workers": "num_workers",
    "threads": "num_threads",
    "val_samples": "val_samples",
    "foreground": "foreground",
    "cache": "cache",
    "use_cache": "use_cache",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from napari_ssl.pretext import registry

    parser.add_argument(
        "--pretext", metavar="NAME[,NAME]",
        help=f"{', '.join(registry.names())}, or several separated by commas",
    )
    parser.add_argument(
        "--data", nargs="+", metavar="PATH", help="scan files or folders (searched recursively, DICOM too)"
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="checkpoint folder (default: the --resume folder, else ./napari-ssl-pretrain)",
    )
    parser.add_argument("--steps", type=int, metavar="N", help="final step count (default 1000)")
    parser.add_argument("--minutes", type=float, metavar="M",
                        help="stop after M minutes of training, saving as at the end (--steps still applies)")
    parser.add_argument(
        "--batch-size", type=int, metavar="B",
        help="samples per step and process (default 2; imaging planes alone: as many plane pixels as 2 3D patches "
             "hold voxels, 9 at the CPU defaults)",
    )
    parser.add_argument(
        "--patch-size", type=int, metavar="P", help="3D patch edge in voxels (default: 48 on CPU, 96 on CUDA)"
    )
    parser.add_argument(
        "--backbone", choices=BACKBONES, help="network size (default: small on CPU, large on CUDA)"
    )
    parser.add_argument(
        "--device", metavar="DEV", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps"
    )
    parser.add_argument("--seed", type=int, metavar="S", help="random seed (default 0)")
    parser.add_argument("--resume", metavar="DIR", help="continue from this checkpoint")
    parser.add_argument("--config", metavar="FILE", help="JSON or TOML file of PretrainConfig settings")
    parser.add_argument("--lr", type=float, metavar="LR", help="learning rate (default 1e-3)")
    parser.add_argument(
        "--spacing",
        type=float,
        nargs=3,
        metavar=("Z", "Y", "X"),
        help="resample scans to this voxel size (mm; default: the plan's, from the data)",
    )
    parser.add_argument(
        "--normalization", choices=NORMALIZATIONS,
        help="intensity normalisation (default: the plan's: ct_zscore on CT, zscore_nonzero on MR)"
    )
    parser.add_argument(
        "--window",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="CT window in HU for --normalization ct (default -1000 1000)",
    )
    parser.add_argument(
        "--save-every", type=int, metavar="N", help="save every N steps (default 500; 0: at the end)"
    )
    parser.add_argument(
        "--workers", type=int, metavar="N", help="data-loader worker processes (default: automatic)"
    )
    parser.add_argument("--threads", type=int, metavar="N", help="CPU threads (default: every core)")
    parser.add_argument(
        "--val-samples", type=int, metavar="N", help="held-out samples for the final metrics (default 8)"
    )
    parser.add_argument("--no-foreground", dest="foreground", action="store_false", default=None,
                        help="sample patches anywhere, air included (default: on the body)")
    parser.add_argument(
        "--cache", metavar="DIR",
        help="the prepared dataset's folder, shared between runs (default: OUT.prepared beside the checkpoint): "
             "each scan read, resampled and normalised once, then read by patches",
    )
    parser.add_argument("--no-cache", dest="use_cache", action="store_false", default=None,
                        help="read every scan into memory instead of preparing them on disk")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, only the final line")


def _read_config_file(path: str) -> dict[str, Any]:
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"config file {file} does not exist")
    text = file.read_text(encoding="utf-8")
    try:
        if file.suffix.lower() == ".toml":
            try:
                import tomllib
            except ImportError:  # Python 3.10
                raise ValueError("TOML needs Python 3.11 or newer; use JSON") from None

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except ValueError as exc:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        raise ValueError(f"config file {file}: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"config file {file}: expected a table of settings, got {type(data).__name__}")
    return data


def build_config(args: argparse.Namespace) -> Any:
    """The :class:`~napari_ssl.training.pretrain.PretrainConfig` of the command line (checkpoint < file < options)."""
    from napari_ssl import checkpoint
    from napari_ssl.training.data import Normalization
    from napari_ssl.training.pretrain import PretrainConfig

    values: dict[str, Any] = {}
    if args.resume:
        saved = dict(checkpoint.open_checkpoint(args.resume).config)
        saved.pop("resume", None)
        values.update(saved)
        values["out"] = args.resume
    if args.config:
        values.update(_read_config_file(args.config))
    for dest, name in _FIELDS.items():
        value = getattr(args, dest, None)
        if value is not None:
            values[name] = tuple(value) if isinstance(value, list) else value
    if args.normalization or args.window:
        base = values.get("normalization") or {}
        base = base.to_dict() if isinstance(base, Normalization) else dict(base)
        if args.normalization:
            base["mode"] = args.normalization
            if args.normalization == "ct_zscore":
                raise ValueError("--normalization ct_zscore takes its statistics from the data: leave it out")
        if args.window:
            base["window"] = list(args.window)
        values["normalization"] = base
    if not values.get("pretexts"):
        from napari_ssl.pretext import registry

        raise ValueError(f"no pretext given: use --pretext {'|'.join(registry.names())}[,...]")
    if not values.get("data"):
        raise ValueError("no data given: use --data PATH [PATH ...]")
    for path in values["data"]:
        if not Path(path).expanduser().exists():
            raise FileNotFoundError(f"--data {path}: no such file or directory")
    return PretrainConfig.from_dict(values)


class ProgressBar:
    """A dependency-free progress bar on a stream (redrawn in place on a terminal, a line every 5% otherwise)."""

    def __init__(self, stream: TextIO, width: int = 28) -> None:
        self.stream = stream
        self.width = width
        self.tty = stream.isatty()
        self.start = time.monotonic()
        self.last_line = -1
        self.first_step = 0  # a resumed run starts above 0 (for the ETA)
        self.total = 0

    def update(self, event: Any) -> None:
        frac = event.step / max(event.total, 1)
        fill = int(self.width * frac)
        elapsed = time.monotonic() - self.start
        eta = ""
        if event.samples_per_s > 0 and event.step < event.total:
            remaining = (event.total - event.step) * (elapsed / max(event.step - self.first_step + 1, 1))
            eta = f" eta {_duration(remaining)}"
        parts = " ".join(f"{k} {v:.4g}" for k, v in event.losses.items() if "/" not in k)
        line = (
            f"[{'#' * fill}{'.' * (self.width - fill)}] {event.step}/{event.total} loss {event.loss:.4g}"
            f"{' (' + parts + ')' if parts and len(event.losses) > 1 else ''} {event.samples_per_s:.1f} samples/s{eta}"
        )
        if self.tty:
            self.stream.write("\r" + line[:200] + "\033[K")
            self.stream.flush()
            return
        bucket = int(frac * 20)
        if bucket != self.last_line or event.step == event.total:
            self.last_line = bucket
            self.stream.write(line + "\n")
            self.stream.flush()

    def message(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\033[K")
        self.stream.write(text + "\n")
        self.stream.flush()


def _preparing(bar: ProgressBar, event: Any) -> None:
    """The prepared dataset's progress: redrawn on a terminal, else a line every 10 %; the last line, then the
    skipped files."""
    from napari_ssl import events

    line = f"napari-ssl pretrain: {events.describe(event)}"
    if event.final:
        bar.message(line)
        if event.summary:
            bar.message(event.summary)
    elif bar.tty:
        bar.stream.write("\r" + line[:200] + "\033[K")
        bar.stream.flush()
    elif event.built and event.done < event.total and (10 * event.done // max(event.total, 1)
                                                       != 10 * (event.done - 1) // max(event.total, 1)):
        bar.message(line)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def run(args: argparse.Namespace) -> int:
    from napari_ssl import checkpoint, events
    from napari_ssl.training.pretrain import pretrain

    config = build_config(args)
    rank = int(os.environ.get("RANK", "0"))
    quiet = args.quiet or rank != 0
    bar = ProgressBar(sys.stderr)
    gen = pretrain(config)
    last_step = None
    try:
        for event in gen:
            if quiet:
                pass
            elif isinstance(event, events.Preparing):
                _preparing(bar, event)
            elif isinstance(event, events.Started):
                bar.first_step = event.start_step
                if event.plan_text:
                    bar.message(event.plan_text)
                bar.message(f"napari-ssl pretrain: {events.describe(event)}")
            elif isinstance(event, events.Progress):
                last_step = event.step
                bar.total = event.total
                bar.update(event)
            elif isinstance(event, events.Saved) and event.step < (bar.total or config.steps):
                bar.message(f"saved step {event.step} to {event.path}")
            if isinstance(event, events.Finished) and rank == 0:
                if not args.quiet:
                    bar.message("")
                metrics = ", ".join(f"{k} {v:.4g}" for k, v in event.metrics.items())
                print(
                    f"napari-ssl pretrain: finished step {event.step}; checkpoint {event.path}"
                    + (f"; {metrics}" if metrics else "")
                )
    except KeyboardInterrupt:
        gen.close()  # a generator suspended at a yield saves now; one interrupted mid-step already saved
        if rank != 0:
            return 130
        try:
            step = checkpoint.open_checkpoint(config.out).step
            where = f"checkpoint at step {step} saved in {config.out}"
        except (OSError, ValueError):
            where = "no checkpoint saved (interrupted before the first step)"
        if not quiet and last_step is not None:
            sys.stderr.write("\n")
        print(f"napari-ssl pretrain: interrupted; {where}", file=sys.stderr)
        return 130
    return 0
