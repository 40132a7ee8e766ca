"""Export a napari-ssl segmenter as a MONAI bundle or a TorchScript file with its sidecar.

Example::

    napari-ssl export --model runs/organs --format monai-bundle --out organs_bundle
    napari-ssl export --model phantom-demo --format torchscript --out phantom_ts

A MONAI bundle (``configs/``, ``models/model.pt`` and ``model.ts``) runs in MONAI's own ``monai.bundle`` without
napari-ssl and gives the masks napari-ssl gives; MONAI Label and MONAI Deploy read the same files. A TorchScript
export is ``model.ts`` plus ``model.json`` (:mod:`napari_ssl.inference.formats.torchscript`). The folder ``--out`` is
written whole, then put in place (an existing one is replaced).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR|NAME",
                        help="fine-tuned checkpoint folder, or a bundled model's name (phantom-demo)")
    parser.add_argument("--format", required=True, metavar="FORMAT", help="monai-bundle or torchscript")
    parser.add_argument("--out", required=True, metavar="DIR", help="the folder to write")


def run(args: argparse.Namespace) -> int:
    from napari_ssl.inference.export import EXPORT_FORMATS, describe_export, export_model

    if args.format not in EXPORT_FORMATS:  # before any model is read
        raise ValueError(f"--format must be one of {', '.join(EXPORT_FORMATS)}, got {args.format!r}")
    target = export_model(args.model, args.out, args.format)
    print(f"napari-ssl export: {describe_export(target)}")
    return 0
