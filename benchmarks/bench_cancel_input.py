"""Cancel while a large in-memory scan is handed to the child: how long the Cancel slot takes, how long until the
worker is done, and the event loop's stalls meanwhile. Run under a display:
``xvfb-run -a python benchmarks/bench_cancel_input.py [--mb 512] [--after-ms 30] [--repeats 3]``.
Targets: the slot returns in < 10 ms; the worker is done < 2 s after Cancel; stalls max < 200 ms.

(tests/_napari/test_relay.py checks what happens, on which thread and in which order; the times live here.)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from qtpy.QtCore import QEventLoop, QTimer
from qtpy.QtWidgets import QApplication

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "_napari"))  # test_relay_jobs: the child job


def one(mb: int, after_ms: int) -> dict[str, float]:
    from test_relay_jobs import BigJob

    from napari_ssl._napari.pretrain.probe import StallProbe
    from napari_ssl._napari.relay import Relay

    array = np.ones((mb * (1 << 20) // 4,), dtype=np.float32)
    relay = Relay("test_relay_jobs:big", BigJob(array=array), label="Job")
    marks: dict[str, float] = {}

    def cancel() -> None:
        marks["asked"] = time.perf_counter()
        relay.stop()
        marks["returned"] = time.perf_counter()

    loop = QEventLoop()
    kinds: list[str] = []
    relay.worker.yielded.connect(lambda e: kinds.append(type(e).__name__))
    relay.worker.started.connect(lambda: QTimer.singleShot(after_ms, cancel))
    relay.worker.finished.connect(lambda: (marks.__setitem__("done", time.perf_counter()), loop.quit()))
    probe = StallProbe(10).start()
    relay.start()
    loop.exec()
    probe.stop()
    return {
        "slot_ms": 1000 * (marks["returned"] - marks["asked"]),
        "done_s": marks["done"] - marks["asked"],
        "stall_max_ms": probe.stats()["max"],
        "ran": float("Progress" in kinds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=512, help="size of the in-memory scan (MB)")
    parser.add_argument("--after-ms", type=int, default=30, help="Cancel this long after the worker starts")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    _app = QApplication.instance() or QApplication([])
    from napari_ssl.runner import pool as runner_pool

    if runner_pool.warm_allowed():  # time the hand-over, not the server's start
        runner_pool.warm_server().wait_ready(lambda: False)
    print(f"load average before: {os.getloadavg()}")
    for i in range(args.repeats):
        r = one(args.mb, args.after_ms)
        print(f"run {i + 1}: Cancel slot {r['slot_ms']:.2f} ms; Cancel -> worker done {r['done_s']:.2f} s; "
              f"stalls max {r['stall_max_ms']:.0f} ms{'; the job ran (cancel came too late)' if r['ran'] else ''}")
    print(f"load average after: {os.getloadavg()}")
    runner_pool.shutdown_server()


if __name__ == "__main__":
    main()
