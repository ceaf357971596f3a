"""Many processes writing records/ at once through their own RecordsStore:
nothing lost, nothing doubled (the lock + atomic replace contract)."""

from __future__ import annotations

import multiprocessing as mp
from collections import Counter

from netsentinel.records import BAN_COMMANDS
from netsentinel.store import RecordsStore

PROCS = 8
COMMANDS_EACH = 200
COUNTER_PROCS = 4
INCREMENTS_EACH = 250

# 'spawn': every worker is a fresh interpreter with its own store and lock
# file descriptor, exactly like separate NetSentinel processes.
CTX = mp.get_context("spawn")


def _append_commands(root: str, worker: int, start) -> None:
    store = RecordsStore(root, lock_timeout=60)
    start.wait()
    for i in range(COMMANDS_EACH):
        store.append_command({"action": "ban", "ip": f"10.{worker}.{i // 250}.{i % 250 + 1}",
                              "id": f"w{worker}-{i}"})


def _increment(root: str, start) -> None:
    store = RecordsStore(root, lock_timeout=60)
    start.wait()
    for _ in range(INCREMENTS_EACH):
        store.update("counter.json", lambda cur: {"n": cur["n"] + 1}, default={"n": 0})


def _run_all(target, args_for, n: int) -> None:
    start = CTX.Event()
    procs = [CTX.Process(target=target, args=(*args_for(k), start)) for k in range(n)]
    for p in procs:
        p.start()
    start.set()  # all at once, so the writers really contend
    for p in procs:
        p.join(timeout=120)
    codes = [p.exitcode for p in procs]
    for p in procs:
        if p.is_alive():
            p.kill()
    assert codes == [0] * n, codes


def test_concurrent_append_command_loses_and_doubles_nothing(records):
    root = str(records.root)
    _run_all(_append_commands, lambda k: (root, k), PROCS)
    cmds = records.read(BAN_COMMANDS, on_corrupt="raise")
    ids = Counter(c["id"] for c in cmds)
    expected = {f"w{w}-{i}" for w in range(PROCS) for i in range(COMMANDS_EACH)}
    assert len(cmds) == PROCS * COMMANDS_EACH
    assert set(ids) == expected and set(ids.values()) == {1}
    # Each worker's commands stay in the order it queued them.
    for w in range(PROCS):
        mine = [int(c["id"].split("-")[1]) for c in cmds if c["id"].startswith(f"w{w}-")]
        assert mine == list(range(COMMANDS_EACH))
    assert not [p.name for p in records.root.iterdir() if ".corrupt-" in p.name or
                p.name.endswith(".tmp")]


def test_concurrent_updates_count_exactly(records):
    root = str(records.root)
    _run_all(_increment, lambda k: (root,), COUNTER_PROCS)
    assert records.read("counter.json", on_corrupt="raise") == {"n": COUNTER_PROCS * INCREMENTS_EACH}
