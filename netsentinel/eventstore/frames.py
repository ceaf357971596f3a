"""The pipe between the analyzer (process.StoreProcess) and its event
store writer process (child.py): frames, and how verdicts are encoded.

Each frame is a 4-byte little-endian length, a codec byte and the
payload: first the settings ({dsn, max_age_days, max_bytes}: not on the
command line, where every user could read a DSN's password), then
batches of (analysed-at time, [ready rows], [[verdict entries], in
batches as the analyzer recorded them]).

Verdicts travel as JSON (b"j"), packed where the analyzer's reader
records them (pack) and joined into frames by its sending thread
(frame_of). marshal looked up every verdict's objects, which the analyzer
still holds elsewhere (its dashboard window, threats), in a table of
references: 3.8 us a verdict on the sending thread against orjson's 2.3
there, and about 1 packed while the verdicts are fresh in the CPU's cache;
the writer decodes JSON in 4.7 us against marshal's 3.4, on a core of its
own. JSON has no NaN or infinity: such a float arrives as null (SQLite
stores a NaN as NULL all the same). Whatever orjson refuses (a lone
surrogate, an integer past 64 bits, a key that is not a string, a type
JSON lacks), ready rows (tuples, kept tuples) and the settings are
marshal (b"m"), or pickle (b"p") for a type marshal cannot take. The
only writer of this pipe is the parent analyzer, running this same
interpreter (an anonymous pipe no other process holds)."""

from __future__ import annotations

import fcntl
import marshal
import pickle
import struct

import orjson

HEADER = struct.Struct("<I")
PIPE_BYTES = 1 << 20  # Linux's pipe-max-size default (more needs root and a sysctl)
MAX_FRAME = 1 << 30  # a length above this is a broken pipe stream, not a frame


def encode(obj: object) -> bytes:
    """A frame: header, codec, payload (ValueError/TypeError: pickle cannot either)."""
    body = None
    if obj.__class__ is tuple and len(obj) == 3 and not obj[1]:  # verdicts, no ready rows
        try:
            body = b"j" + orjson.dumps(obj)
        except TypeError:  # orjson.JSONEncodeError is one
            pass
    if body is None:
        try:
            body = b"m" + marshal.dumps(obj)
        except ValueError:
            body = b"p" + pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(body)) + body


def pack(entries: list) -> bytes | list:
    """A batch of verdict entries as the JSON array a frame will carry
    (encoded where they were just made, while they are in the CPU's cache:
    encoding them later on the sending thread cost twice as much), or the
    list itself when orjson refuses it (encode then picks another codec)."""
    try:
        return orjson.dumps(entries)
    except TypeError:  # orjson.JSONEncodeError is one
        return entries


def unpack(batch: bytes | list) -> list:
    """The verdict entries of a batch as pack() left it."""
    return orjson.loads(batch) if batch.__class__ is bytes else batch


def frame_of(now: float, rows: list, batches: list) -> bytes:
    """The frame of (now, rows, batches), batches as pack() left them: packed
    arrays joined as they are into one JSON frame, else all decoded and
    encoded together (a batch orjson refused, or ready rows)."""
    if not rows and all(b.__class__ is bytes for b in batches):
        body = b"j[" + orjson.dumps(now) + b",[],[" + b",".join(batches) + b"]]"
        return HEADER.pack(len(body)) + body
    return encode((now, rows, list(map(unpack, batches))))


def decode(body: bytes) -> object:
    codec = body[:1]
    if codec == b"j":
        return orjson.loads(memoryview(body)[1:])
    return marshal.loads(body[1:]) if codec == b"m" else pickle.loads(body[1:])


def widen(pipe) -> None:
    """Widen the pipe to this process (the analyzer's end) to PIPE_BYTES from
    64 KiB: a frame (about 0.8 MB) then crosses in one or two writes and
    reads instead of a dozen, each a wait for the GIL on both sides (the
    reading thread here waited up to the 5 ms switch interval for every
    64 KiB while the writing thread converted rows). Best effort: a
    smaller pipe only costs time."""
    try:
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except (OSError, AttributeError):
        pass


def read_frame(stream) -> bytes | None:
    head = stream.read(HEADER.size)
    if len(head) < HEADER.size:
        return None
    (n,) = HEADER.unpack(head)
    if n > MAX_FRAME:
        raise ValueError(f"frame of {n} bytes: the stream from the analyzer is broken")
    body = stream.read(n)
    return body if len(body) == n else None
