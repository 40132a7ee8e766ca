"""The ``napari-ssl`` command line: ``napari-ssl COMMAND [options]``.

Each command lives in ``napari_ssl/commands/<name>.py`` and provides ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when their command runs (or for ``--help``), so the CLI
starts fast and a GPU server never imports Qt. A bad input (``ValueError`` / ``OSError``) ends in one
line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence

from napari_ssl import __version__

# name -> (module, one-line help); the order is the order of --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("napari_ssl.commands.demo", "open napari with the sample phantom and the plugin's docks"),
    "pretrain": ("napari_ssl.commands.pretrain", "self-supervised pretraining on a folder of scans"),
    "finetune": ("napari_ssl.commands.finetune", "fine-tune a segmenter from a pretrained encoder"),
    "segment": ("napari_ssl.commands.segment", "segment a scan with a fine-tuned model"),
    "export": ("napari_ssl.commands.export", "write a fine-tuned model as a MONAI bundle or TorchScript file"),
    "evaluate": ("napari_ssl.commands.evaluate", "compare pretrained vs scratch at several label fractions"),
    "score": ("napari_ssl.commands.score", "what a pretraining checkpoint learned, on held-out scans (JSON)"),
    "reader": ("napari_ssl.commands.reader", "make napari-ssl napari's reader for scans (File > Open asks no more)"),
}


def available_commands() -> dict[str, tuple[str, str]]:
    """The commands whose module is installed."""
    return {name: spec for name, spec in COMMANDS.items() if importlib.util.find_spec(spec[0]) is not None}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-ssl",
        description="Self-supervised pretraining for 3D medical scans, in napari or headless.",
    )
    parser.add_argument("--version", action="version", version=f"napari-ssl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in available_commands().items():
        module = importlib.import_module(module_name)
        cmd = sub.add_parser(
            name, help=help_text, description=(module.__doc__ or help_text).strip().splitlines()[0]
        )
        module.add_arguments(cmd)
        cmd.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``napari-ssl`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._module.run(args) or 0)
    except KeyboardInterrupt:
        print("napari-ssl: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as exc:
        print(f"napari-ssl {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
