"""What the fuzz targets share: the case counter, a capture of error-level log records, JSON-ish strategies."""

from __future__ import annotations

import contextlib
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator
from functools import wraps
from typing import Any, TypeVar

from hypothesis import strategies as st

CASES: Counter[str] = Counter()
F = TypeVar("F", bound=Callable[..., Any])


def counted(fn: F) -> F:
    """Count every case hypothesis runs through `fn` under the pytest node id of the test running it."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        CASES[os.environ.get("PYTEST_CURRENT_TEST", fn.__name__).rsplit(" ", 1)[0]] += 1
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def error_logs() -> Iterator[list[logging.LogRecord]]:
    """Every record logged at ERROR or above, by any logger, while the block runs (from any thread)."""
    handler = _Collect()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler.records
    finally:
        root.removeHandler(handler)


def describe(records: list[logging.LogRecord]) -> str:
    return "; ".join(f"{r.name}: {r.getMessage()} {r.exc_info[1]!r}" if r.exc_info else r.getMessage() for r in records)


# ---- JSON-ish values --------------------------------------------------------------------------------------
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


DEPTHS = (1, 50, 99, 100, 101, 127, 128, 129, 500, 999, 1000, 5000, 100_000)


@st.composite
def nested(draw: st.DrawFn, max_depth: int = 100_000) -> bytes:
    """Deep nesting with an optional valid prefix/suffix: the nesting bomb and its near misses."""
    depth = draw(st.sampled_from([d for d in DEPTHS if d <= max_depth]))
    opener = draw(st.sampled_from([b"[", b'{"a":', b'{"model":"m","prompt":[', b'{"messages":[{"content":']))
    closer = {b"[": b"]", b'{"a":': b"}"}.get(opener, b"")
    close = draw(st.booleans())
    return opener * depth + b"1" + (closer * depth if close else b"")
