"""Make napari-ssl napari's reader for scans (NIfTI, NRRD, MHA/MHD, DICOM), so File > Open does not ask.

Without an option, says which scan suffixes napari opens with napari-ssl now. ``--default`` saves napari-ssl as the
reader of every scan suffix in napari's preferences (the same setting as *Preferences > Plugins > File extension
readers*); ``--reset`` removes it, and napari asks again.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--default", action="store_true", help="open scans with napari-ssl without asking")
    group.add_argument("--reset", action="store_true", help="forget it: napari asks which reader again")


def run(args: argparse.Namespace) -> int:
    from napari_ssl._napari.preferences import (
        SCAN_PATTERNS,
        clear_default_reader,
        default_reader_patterns,
        make_default_reader,
        napari_settings,
    )

    settings = napari_settings()
    if args.default:
        done = make_default_reader(settings)
        print(f"napari opens {', '.join(done)} with napari-ssl now (saved in {settings.config_path})")
    elif args.reset:
        done = clear_default_reader(settings)
        print(f"napari asks which reader again for {', '.join(done) or 'every suffix'}")
    else:
        ours = default_reader_patterns(settings)
        rest = [p for p in SCAN_PATTERNS if p not in ours]
        print(f"opened with napari-ssl without asking: {', '.join(ours) or 'none'}"
              + (f"; napari asks for {', '.join(rest)} (napari-ssl reader --default)" if rest else ""))
    return 0
