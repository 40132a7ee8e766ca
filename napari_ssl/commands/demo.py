"""Open napari with the sample head phantom and the napari-ssl docks.

With ``--screenshot FILE.png`` the same view is rendered and saved, and the program exits: on a headless
machine it runs itself under ``xvfb-run`` when no display is set.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--screenshot", type=Path, metavar="FILE.png", help="save the window as PNG and exit")
    parser.add_argument("--3d", dest="ndisplay", action="store_const", const=3, default=2, help="start in 3D view")


def _has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) or not sys.platform.startswith("linux")


def run(args: argparse.Namespace) -> int:
    if args.screenshot is None and not _has_display():
        args.screenshot = Path("napari-ssl-demo.png")
        print(f"napari-ssl demo: no display found; rendering the demo to {args.screenshot.resolve()} instead of a window")
    if args.screenshot is not None:
        if args.screenshot.suffix.lower() != ".png":
            raise ValueError(f"--screenshot must name a .png file, got {args.screenshot}")
        if not args.screenshot.resolve().parent.is_dir():
            raise OSError(f"--screenshot: folder {args.screenshot.resolve().parent} does not exist")
        if not _has_display():
            xvfb = shutil.which("xvfb-run")
            if xvfb is None:
                raise OSError("no display: install xvfb (apt install xvfb) or set DISPLAY")
            argv = [xvfb, "-a", "-s", "-screen 0 1600x1000x24", sys.executable, "-m", "napari_ssl.cli", "demo",
                    "--screenshot", str(args.screenshot)] + (["--3d"] if args.ndisplay == 3 else [])
            os.execv(xvfb, argv)
    from napari_ssl._napari.demo import run_demo

    code = run_demo(args.screenshot, ndisplay=args.ndisplay)
    if args.screenshot is not None:
        print(f"napari-ssl demo: saved {args.screenshot}")
    return code
