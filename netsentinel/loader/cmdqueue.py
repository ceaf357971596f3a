"""Consuming commands from records/: a command file (ban_commands.json,
rule_commands.json) and its drop directory (ban_commands.d/, rule_commands.d/).

People and tools add commands; the loader consumes them. Under the store
lock the loader reads what is queued, hands each command to `handle` (which
applies it or refuses it), persists the outcome (`commit`), and only then
removes exactly the commands it handled.

Nothing queued can stop the loader: every text goes through jsonsafe (size,
depth, NaN/Infinity, lone surrogates) and any exception while handling one
command refuses that command, with the reason, instead of escaping. A
refusal carries a reference (file, inode, mtime, position) so a command
handled again after a crash is not recorded as refused twice.

The command file. Where fanotify permission events are available (the
loader runs as root), cmdfan lets one writer session in at a time and moves
what each session left into the drop directory before the next may open
the file: the file is then only swept here (what a tool renamed onto it),
and every command goes through the drop directory, exactly once. Without
fanotify the file is read in place and the writes nobody read are counted
and reported (loader/cmdfile.py).

The drop directory is for scripts that write often: each file (any name not
starting with '.'; write it under a '.name' and rename it) holds one command
or a list, is consumed in mtime order and then removed. Nothing can be lost.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable

from .. import dropdir, fsguard, jsonsafe
from ..store import RecordsStore, StoreError
from ..watch import FileSignature
from . import cmdfan
from .cmdfile import CountedFile
from .cmdwatch import WriteCounter

DROP_BATCH = 2000  # drop files per pass, so one pass never stalls the loop for long


class CommandQueue(CountedFile):
    def __init__(self, store: RecordsStore, name: str, handle: Callable[[Any], None],
                 refuse: Callable[[Any, str], None], commit: Callable[[], None],
                 serialise: bool = True):
        self.store = store
        self.name = name
        self.drop_name = dropdir.drop_dir_name(name)
        self.handle = handle
        self.refuse = refuse
        self.commit = commit  # persists what handle() changed, before the queue shrinks
        self.current_ref: str | None = None  # the command being handled, for refusals
        self.new_seen = 0  # commands that appeared in the file since we looked (cmdwatch)
        self._watch = FileSignature(store.path(name))
        self._drop_watch = FileSignature(store.path(self.drop_name))  # a file added or removed
        self._bad_text: tuple[str, float] | None = None
        self._handled_unremoved: list = []  # handled, still in the file (removal deferred)
        self._known: Counter = Counter()  # the file's commands as we last knew them
        self.own_writes = 0  # our rewrites of the file (cmdwatch counts them as sessions)
        self.lost_reported = 0
        self._lost_base: int | None = 0  # None: recounting after an overflow
        self._last_sessions = 0
        self.watch: WriteCounter | None = None
        # serialise=False: the counting path alone (its tests; a writer in
        # this process is not serialised anyway: our own opens go in at once).
        self.fan = cmdfan.attach(store.root, name) if serialise else None
        if self.fan is None:
            self._start_counting()

    def changed(self) -> bool:
        """Cheap check for the run loop (an lstat each of the file and the
        drop directory; a small read while the file is seconds old, see
        netsentinel/watch.py)."""
        file_changed, drop_changed = self._watch.changed(), self._drop_watch.changed()
        if file_changed or drop_changed or self._bad_text is not None or self._handled_unremoved:
            return self._watch.present or self._drop_watch.present
        return False

    def _apply(self, raw: Any, ref: str) -> None:
        """handle() one command; whatever goes wrong refuses that command only."""
        self.current_ref = ref
        try:
            self.handle(raw)
        except StoreError:
            raise  # records/ itself is unusable: the pass stops, the command stays queued
        except Exception as e:  # a bug or a kernel error must not crash the loader
            self.refuse(raw, f"could not be applied: {type(e).__name__}: {str(e)[:200]}")
        finally:
            self.current_ref = None

    def process(self) -> int:
        """Handle what is queued; returns how many commands were handled."""
        with self.store.locked():
            if self.fan is not None and not self.fan.alive():
                self.fan = None  # its thread failed (status says why): count from here
                self._start_counting()
            if self.fan is not None:
                return self._sweep() + self._process_drop_dir()
            sessions = self.watch.drain() if self.watch else None  # before reading: see cmdwatch
            n = self._process_file() + self._process_drop_dir()
            if sessions is not None:
                self._report_lost(sessions)
            return n

    # ------------------------------------------------------------ the command file
    def _sweep(self) -> int:
        """Serialised writers (cmdfan): record what the responder could not
        keep, and move what a tool renamed onto the file to the drop directory."""
        notes = self.fan.take_notes(self.name)
        for what, why in notes:
            self.refuse(what, why)
        try:
            self.fan.sweep(self.name)
        except fsguard.UnsafePath as e:
            return len(notes) + self._unsafe(e)
        return len(notes)

    def _unsafe(self, e: fsguard.UnsafePath) -> int:
        # A link, a directory, a file others may write or too big: keep it aside, once.
        aside = self.store.set_aside(self.name)
        self._saw_unreadable()
        self.refuse({"file": aside.name}, f"{self.name}: {e}")
        return 1

    # ------------------------------------------------------------ the drop directory
    def _process_drop_dir(self) -> int:
        try:
            names = dropdir.list_files(self.store.root, self.drop_name)[:DROP_BATCH]
        except fsguard.UnsafePath as e:
            raise StoreError(str(e)) from None  # reported by the loop; the command file still works
        done: list[str] = []
        handled = 0
        for fname in names:
            where = f"{self.drop_name}/{fname}"
            try:
                data, st = dropdir.read(self.store.root, self.drop_name, fname)
            except fsguard.UnsafePath as e:
                self.current_ref = f"{where}:refused"
                self.refuse({"file": where}, str(e))
                self.current_ref = None
                done.append(fname)
                continue
            if data is None:  # gone meanwhile
                continue
            try:
                commands = jsonsafe.loads_commands(data)
            except jsonsafe.JsonRefused as e:
                self.current_ref = f"{where}:{st.st_ino}:{st.st_mtime_ns}"
                if f"-{self.name}" in fname:  # a session cmdfan stored: kept aside as the file was
                    where = self.store.set_aside(self.name, src=self.store.root / where).name
                self.refuse({"raw": data[:4096].decode("utf-8", "replace"), "file": where},
                            f"{where}: {e}")
                self.current_ref = None
                commands = []
            for i, raw in enumerate(commands):
                self._apply(raw, f"{where}:{st.st_ino}:{st.st_mtime_ns}:{i}")
            handled += max(1, len(commands))
            done.append(fname)
        if done:
            self.commit()  # the outcome is saved before any file goes
            for fname in done:
                dropdir.remove(self.store.root, self.drop_name, fname)
        return handled

