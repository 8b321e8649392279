"""A child's output as lines: the last few kept, each passed to a callback, the raw bytes appended to a log file.

Why it exists: a child process must be read as fast as it writes (or it blocks on a full pipe), yet the harness
only needs its last lines (for an error message), the lines that say it is ready, and a log file for post-mortems.
`OutputLines.feed` takes whatever bytes arrived, so no line is too long to read: a line over `MAX_LINE` bytes is cut
(the rest of it dropped, the cut marked). Once `tail_only` is set and no callback needs every line, lines that
cannot end up in the tail are not even decoded.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable
from typing import IO

MAX_LINE = 64 * 1024  # bytes kept of one output line
CUT = " [line cut]"


class OutputLines:
    def __init__(self, keep: int, on_line: Callable[[str], None], log: IO[bytes] | None = None) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self._lines: deque[str] = deque(maxlen=keep)
        self._on_line = on_line
        self._log = log
        self._partial = bytearray()
        self._cut = False
        self.tail_only = False  # set when the callback no longer needs every line

    @property
    def lines(self) -> list[str]:
        return list(self._lines)

    def tail(self, lines: int = 20) -> str:
        kept = list(self._lines)[-lines:]
        return "\n".join(kept) if kept else "(no output)"

    def feed(self, data: bytes) -> None:
        if self._log is not None:
            with contextlib.suppress(OSError, ValueError):
                self._log.write(data)
        pieces = data.split(b"\n")
        self._take(pieces[0])
        if len(pieces) == 1:
            return
        self._end_line()
        middle = pieces[1:-1]
        if self.tail_only:
            middle = middle[-(self._lines.maxlen or 1) :]
        for raw in middle:
            self._line(raw[:MAX_LINE].decode(errors="replace") + (CUT if len(raw) > MAX_LINE else ""))
        self._take(pieces[-1])

    def close(self) -> None:
        """End of output: a last line without a newline is still a line."""
        if self._partial or self._cut:
            self._end_line()
        if self._log is not None:
            self._log.close()
            self._log = None

    def _take(self, piece: bytes) -> None:
        if self._cut or not piece:
            return
        self._partial += piece
        if len(self._partial) > MAX_LINE:
            del self._partial[MAX_LINE:]
            self._cut = True

    def _end_line(self) -> None:
        text = self._partial.decode(errors="replace") + (CUT if self._cut else "")
        self._partial.clear()
        self._cut = False
        self._line(text)

    def _line(self, text: str) -> None:
        text = text.removesuffix("\r")
        self._lines.append(text)
        self._on_line(text)
