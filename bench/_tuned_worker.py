"""`distillwatch worker` with Faust/aiokafka settings tuned, to price tuning alone.

The pipeline is untouched: this wraps `faust.App` so that the app `streams.pipeline`
builds gets the keyword arguments in `TUNING` on top of its own, quiets the loggers
that build DEBUG records on every produce request, then runs the ordinary CLI.

    python -m bench._tuned_worker worker
"""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
import threading
import time
from typing import Any

import faust

TUNING: dict[str, Any] = {
    "producer_linger": 0.005,  # seconds: let aiokafka batch the per-event sends
    "producer_max_batch_size": 1024 * 1024,  # bytes per partition batch (default 16 KiB)
    "producer_compression_type": "lz4",
    "producer_acks": 1,
    "broker_max_poll_records": 5000,
    "stream_buffer_maxsize": 32_768,
}

# DW_BENCH_TUNING: a JSON object replacing TUNING, to try one knob at a time;
# DW_BENCH_SWITCH_INTERVAL: seconds for sys.setswitchinterval (the GIL hand-over period).
if os.environ.get("DW_BENCH_TUNING"):
    TUNING = json.loads(os.environ["DW_BENCH_TUNING"])
if os.environ.get("DW_BENCH_SWITCH_INTERVAL"):
    sys.setswitchinterval(float(os.environ["DW_BENCH_SWITCH_INTERVAL"]))
# DW_BENCH_GC_THRESHOLD: "g0,g1,g2" for gc.set_threshold (CPython's default 700,10,10).
if os.environ.get("DW_BENCH_GC_THRESHOLD"):
    gc.set_threshold(*(int(x) for x in os.environ["DW_BENCH_GC_THRESHOLD"].split(",")))

_App = faust.App


def _tuned_app(*args: Any, **kwargs: Any) -> faust.App:
    return _App(*args, **{**kwargs, **TUNING})


def _quiet_loggers() -> None:
    # mode configures logging when the worker starts; set the levels after it did.
    time.sleep(5)
    for name in ("aiokafka", "faust", "mode", "kafka"):
        logging.getLogger(name).setLevel(logging.WARNING)
    print("tuned: logger levels "
          + ", ".join(f"{n}={logging.getLogger(n).getEffectiveLevel()}"
                      for n in ("", "aiokafka", "faust")), file=sys.stderr)


faust.App = _tuned_app  # type: ignore[misc]

if __name__ == "__main__":
    threading.Thread(target=_quiet_loggers, daemon=True).start()
    from streams.cli import main

    main()
