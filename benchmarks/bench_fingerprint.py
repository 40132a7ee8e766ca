"""What the plan's fingerprint of a large folder costs (issue 22): a header read against a decode per file, and
:func:`napari_ssl.training.prepared.sampled_fingerprint` (every header, a sample of 16 decoded) cold and cached::

    python benchmarks/bench_fingerprint.py [DATA]

Every NIfTI / NRRD / MetaImage file under ``DATA`` (default: the shared data) is read once first, so the page cache is
warm for all (a cold disk adds its latency to each alike). Run on 2 busy CPU cores (a training benchmark beside it),
the shared data (95 sources: 86 ``.nii.gz``, 2 ``.nrrd``, 7 DICOM folders)::

    header read (read_header + canonical grid)  0.79 ms a file (median), 0.13 s for all 88
    decode (napari_ssl.io.read)                 17.2 ms a file (median), 1.6 s for all 88
    sampled_fingerprint, cold (16 decoded)      0.83 s (16 cases decoded, 89 grids: 88 headers + 1 sampled DICOM)
    sampled_fingerprint, cached                 0.01 s (no header read, nothing decoded)

A header costs ~1/20 of a decode on these small scans (more on large ones: a header read does not grow with the
scan), so 10,000 files cost ~8 s of header reads once, then nothing while they are unchanged.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main(argv: list[str] | None = None) -> int:
    from napari_ssl import io
    from napari_ssl.training.prepared import find_sources, sampled_fingerprint
    from napari_ssl.training.prepared_entry import IMAGE_SUFFIXES
    from napari_ssl.training.prepared_fingerprint import header_geometry

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", default=str(DATA))
    args = parser.parse_args(argv)
    sources, _ = find_sources([args.data])
    files = [s for s in sources if s.is_file() and io.scan_suffix(s) in IMAGE_SUFFIXES]
    if not files:
        raise SystemExit(f"no NIfTI, NRRD or MetaImage files under {args.data}")
    for f in files:  # page cache warm for every file
        f.read_bytes()
    header_s = []
    for f in files:
        t = time.perf_counter()
        header_geometry(f)
        header_s.append(time.perf_counter() - t)
    decode_s = []
    for f in files:
        t = time.perf_counter()
        with contextlib.suppress(OSError):
            io.read(f)
        decode_s.append(time.perf_counter() - t)
    print(f"{len(files)} files of {len(sources)} sources under {args.data}")
    print(f"header read (read_header + canonical grid)  {1e3 * statistics.median(header_s):.2f} ms a file (median), "
          f"{sum(header_s):.2f} s for all")
    print(f"decode (napari_ssl.io.read)                 {1e3 * statistics.median(decode_s):.1f} ms a file (median), "
          f"{sum(decode_s):.1f} s for all")
    with tempfile.TemporaryDirectory() as cache:
        for label in ("cold (16 decoded)", "cached"):
            t = time.perf_counter()
            fp = sampled_fingerprint(sources, cache)
            took = time.perf_counter() - t
            covered = "" if fp is None else f" ({len(fp.cases)} cases decoded, {len(fp.headers)} grids)"
            print(f"sampled_fingerprint, {label:<21}  {took:.2f} s{covered}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
