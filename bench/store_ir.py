#!/usr/bin/env python3
"""bench/store_ir.py - the event store writer's work a row, in instructions
(load-independent): what its process does with frames, in one thread:
decode them and convert their verdicts (child.rows_of) and write the rows
through a StoreWriter into a fresh SQLite store, WRITE_BATCH rows a
transaction, as child.py's writing thread does.

  --callgrind   runs itself under valgrind twice (SMALL and LARGE verdicts,
                framed beforehand into a file each run reads) and prints
                instructions a row: the difference of the two runs over the
                difference of their rows (start-up and imports cancel out)
  (default)     one run of --rows verdicts: CPU µs a row of the writing alone
  --source      the verdicts: `day` (bench/gen_day.py's day, the default) or
                `analyzer` (the frames the analyzer sends its writer for
                bench/analyzer.py's events on the rules path: its run is
                captured as process.py encodes them; a few threat rows too)

USAGE: PYTHONPATH=. .venv/bin/python bench/store_ir.py [--callgrind] [--rows N] [--source analyzer]
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


def make_frames(n: int, path: Path, source: str = "day") -> None:
    if source == "analyzer":
        return analyzer_frames(n, path)
    from store_insert import verdicts
    try:
        from netsentinel.eventstore.frames import encode
    except ImportError:  # a checkout from before frames.py (an A/B's base)
        from netsentinel.eventstore.child import encode
    ents, now = verdicts(n, time.time()), time.time()
    path.write_bytes(b"".join(encode((now, [], [ents[i:i + FRAME]]))
                        for i in range(0, n, FRAME)))


# Run in a subprocess: the analyzer (rules) over bench/analyzer.py's events,
# every frame process.py encodes for its writer kept in a file (the settings
# frame left out).
_CAPTURE = """
import sys
from netsentinel.eventstore import process
out, encode = open(sys.argv[1], "wb"), process.encode
def keep(obj):
    b = encode(obj)
    if not isinstance(obj, dict):
        out.write(b)
        out.flush()
    return b
process.encode = keep
from netsentinel.analyzer.cli import main
sys.argv[1:2] = []
main()
"""


def analyzer_frames(n: int, path: Path) -> None:
    from analyzer import make_events
    with tempfile.TemporaryDirectory(prefix="ns-store-ir-") as tmp:
        (Path(tmp) / "filter_config.json").write_text("{}")
        done = subprocess.run(
            [sys.executable, "-c", _CAPTURE, str(path), "--records", tmp, "--config",
             str(Path(tmp) / "filter_config.json"), "--no-history", "--backend", "rules"],
            input=make_events(n), text=True, capture_output=True, cwd=HERE.parent,
            env=dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (
                str(HERE.parent), os.environ.get("PYTHONPATH"))))))
        if done.returncode != 0:
            raise SystemExit(f"the analyzer exited {done.returncode}: {done.stderr.strip()[-300:]}")


def _rows_of(child, body: bytes) -> list[tuple]:
    """child.rows_of, or what the writer did before it (the base of an A/B)."""
    if hasattr(child, "rows_of"):
        return child.rows_of([body])
    from netsentinel.eventstore.rows import row_of
    at, ready, chunks = child.decode(body)
    return [*ready, *(row_of(e, at) for c in chunks for e in c)]


def run(n: int, frames_file: Path | None, source: str = "day") -> tuple[float, int]:
    import io
    from netsentinel.eventstore import child
    from netsentinel.eventstore.base import Retention
    from netsentinel.eventstore.writer import WRITE_BATCH, StoreWriter
    from netsentinel.records import EVENTS_DB

    if frames_file is None:
        with tempfile.TemporaryDirectory(prefix="ns-store-ir-") as tmp:
            make_frames(n, Path(tmp) / "frames", source)
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
            rows = _rows_of(child, body)
            w.add(rows)
            held += len(rows)
            if held >= WRITE_BATCH:
                w.flush()
                held = 0
        w.flush()
        used = time.process_time() - t
        written = w.status()["rows_written"]
        assert written == n or source != "day", w.status()
        w.close()
    return used, written


def callgrind(py: str, source: str) -> int:
    counts, rows = [], []
    for n in (SMALL, LARGE):
        with tempfile.TemporaryDirectory() as tmp:
            out, frames = Path(tmp) / "cg.out", Path(tmp) / "frames"
            make_frames(n, frames, source)
            done = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                                   py, __file__, "--rows", str(n), "--frames", str(frames),
                                   "--source", source],
                                  check=True, capture_output=True, env=os.environ, text=True)
            m = re.search(r"^summary:\s+(\d+)", out.read_text(), re.M)
            counts.append(int(m.group(1)))
            rows.append(int(re.search(r"\(([\d,]+) rows\)", done.stdout).group(1).replace(",", "")))
    return (counts[1] - counts[0]) // (rows[1] - rows[0])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--callgrind", action="store_true")
    p.add_argument("--rows", type=int, default=LARGE)
    p.add_argument("--frames", type=Path, help="read the verdicts from this file (--callgrind's)")
    p.add_argument("--source", choices=("day", "analyzer"), default="day",
                   help="gen_day.py's verdicts, or the analyzer's frames for bench/analyzer.py's events")
    args = p.parse_args()
    if args.callgrind:
        print(f"{callgrind(sys.executable, args.source):,} instructions a row "
              f"(decode, row_of, insert; {args.source})")
    else:
        used, rows = run(args.rows, args.frames, args.source)
        print(f"{used * 1e6 / rows:.2f} µs of CPU a row ({rows:,} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
