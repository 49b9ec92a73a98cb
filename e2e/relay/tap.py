"""The relay's tap (SPEC.md §10.9): every request body it received and every response body it
sent, with its channel (``recv:<path>``, ``send:<path>``). Off unless asked for; the proof
suite and the demo turn it on to scan what a relay sees.

:class:`Recorder` keeps the records in memory; :class:`FileTap` appends them to a file as
``u16 channel length | channel | u32 length | bytes`` (``--tap FILE``); :func:`read_tap` reads
such a file back.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

__all__ = ["Tap", "Recorder", "FileTap", "read_tap"]

#: Called with (channel, bytes) for every request body received and response body sent.
Tap = Callable[[str, bytes], None]


@dataclass(slots=True)
class Recorder:
    """A tap keeping every record in memory, in order."""

    records: list[tuple[str, bytes]] = field(default_factory=list)

    def __call__(self, channel: str, data: bytes) -> None:
        self.records.append((channel, bytes(data)))

    def channel(self, name: str) -> list[bytes]:
        """The bodies recorded on one channel, in order."""
        return [d for ch, d in self.records if ch == name]

    def channels(self) -> dict[str, int]:
        """How many records each channel holds."""
        out: dict[str, int] = {}
        for ch, _ in self.records:
            out[ch] = out.get(ch, 0) + 1
        return out

    @property
    def total_bytes(self) -> int:
        return sum(len(d) for _, d in self.records)


class FileTap:
    """A tap appending ``u16 channel length | channel | u32 length | bytes`` records to a file
    (flushed after each, so a reader sees every answered request)."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.lock = threading.Lock()

    def __call__(self, channel: str, data: bytes) -> None:
        name = channel.encode()
        with self.lock:
            self.out.write(struct.pack(">H", len(name)) + name + struct.pack(">I", len(data)))
            self.out.write(data)
            self.out.flush()


def read_tap(data: bytes) -> list[tuple[str, bytes]]:
    """The records of a :class:`FileTap` file, in order (a record cut short at the end, still
    being written, is left out)."""
    out, i = [], 0
    while i + 2 <= len(data):
        (n,) = struct.unpack_from(">H", data, i)
        if i + 2 + n + 4 > len(data):
            break
        channel = data[i + 2 : i + 2 + n].decode()
        (m,) = struct.unpack_from(">I", data, i + 2 + n)
        if i + 6 + n + m > len(data):
            break
        out.append((channel, data[i + 6 + n : i + 6 + n + m]))
        i += 6 + n + m
    return out
