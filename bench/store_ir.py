#!/usr/bin/env python3
"""bench/store_ir.py - the event store writer's work a row, in instructions
(load-independent): what its process does with a frame, in one thread:
decode it (child.decode), convert its verdicts (rows.row_of) and write them
through a StoreWriter into a fresh SQLite store, WRITE_BATCH rows a
transaction, as child.py's writing thread does.

  --callgrind   runs itself under valgrind twice (SMALL and LARGE verdicts,
                framed beforehand into a file each run reads) and prints
                instructions a row: the difference of the two runs over the
                difference of their rows (start-up and imports cancel out)
  (default)     one run of --rows verdicts: CPU µs a row of the writing alone

USAGE: PYTHONPATH=. .venv/bin/python bench/store_ir.py [--callgrind] [--rows N]
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

SMALL, LARGE = 20_000, 60_000
FRAME = 2000  # verdicts a frame, as process.py sends them


def make_frames(n: int, path: Path) -> None:
    from store_insert import verdicts
    from netsentinel.eventstore import child
    ents, now = verdicts(n, time.time()), time.time()
    path.write_bytes(b"".join(child.encode((now, [], ents[i:i + FRAME]))
                              for i in range(0, n, FRAME)))


def run(n: int, frames_file: Path | None) -> float:
    import io
    from netsentinel.eventstore import child
    from netsentinel.eventstore.base import Retention
    from netsentinel.eventstore.rows import row_of
    from netsentinel.eventstore.writer import WRITE_BATCH, StoreWriter
    from netsentinel.records import EVENTS_DB

    if frames_file is None:
        with tempfile.TemporaryDirectory(prefix="ns-store-ir-") as tmp:
            make_frames(n, Path(tmp) / "frames")
            data = (Path(tmp) / "frames").read_bytes()
    else:
        data = frames_file.read_bytes()
    stream, frames = io.BytesIO(data), []
    while (body := child.read_frame(stream)) is not None:
        frames.append(body)
    gc.set_threshold(child.GC_THRESHOLD, 20, 20)
    try:  # as the writer process does (child.main)
        from netsentinel.eventstore.sqlite import one_writer_process
        one_writer_process()
    except ImportError:  # a checkout from before it (the base of an A/B)
        pass
    with tempfile.TemporaryDirectory(prefix="ns-store-ir-") as tmp:
        w = StoreWriter(str(Path(tmp) / EVENTS_DB), print,
                        Retention(max_age_days=3650, max_bytes=1 << 40))
        w.flush()  # open and migrate before the clock starts
        t = time.process_time()
        held = 0
        for i, body in enumerate(frames):
            frames[i] = None  # as the process reads them: one frame at a time in memory
            at, ready, entries = child.decode(body)
            w.add([*ready, *(row_of(e, at) for e in entries)])
            held += len(entries)
            if held >= WRITE_BATCH:
                w.flush()
                held = 0
        w.flush()
        used = time.process_time() - t
        assert w.status()["rows_written"] == n, w.status()
        w.close()
    return used


def callgrind(py: str) -> int:
    counts = []
    for n in (SMALL, LARGE):
        with tempfile.TemporaryDirectory() as tmp:
            out, frames = Path(tmp) / "cg.out", Path(tmp) / "frames"
            make_frames(n, frames)
            subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                            py, __file__, "--rows", str(n), "--frames", str(frames)], check=True,
                           capture_output=True, env=os.environ)
            m = re.search(r"^summary:\s+(\d+)", out.read_text(), re.M)
            counts.append(int(m.group(1)))
    return (counts[1] - counts[0]) // (LARGE - SMALL)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--callgrind", action="store_true")
    p.add_argument("--rows", type=int, default=LARGE)
    p.add_argument("--frames", type=Path, help="read the verdicts from this file (--callgrind's)")
    args = p.parse_args()
    if args.callgrind:
        print(f"{callgrind(sys.executable):,} instructions a row (decode, row_of, insert)")
    else:
        used = run(args.rows, args.frames)
        print(f"{used * 1e6 / args.rows:.2f} µs of CPU a row ({args.rows:,} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
