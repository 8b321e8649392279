"""What the real descheduler's log says about a run of the `descheduler` arm (descheduler_arm.py).

Why it exists: the binary exposes its counters only on a metrics port the arm does not open, and what the report
needs (cycles completed, background evictions, the nodes it evicted from, its errors) is in its klog lines at
`--v 3`, one per event. Fed line by line as the output arrives; any text is accepted, non-klog lines are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

_KLOG = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ [^\]]+\] (.*)$")
_EVICTING = re.compile(r'"Evicting pods from node" node="([^"]+)"')


@dataclass
class LogSummary:
    """What the descheduler's klog lines (--v 3) say about a run; fed line by line."""

    cycles: int = 0  # "Number of evictions/requests": the end of a descheduling cycle
    background_evictions: int = 0  # "Eviction in background assumed": KubeVirt's 429, an evacuation started
    evicting_from: dict[str, int] = field(default_factory=dict)  # node -> cycles that evicted from it
    errors: list[str] = field(default_factory=list)  # distinct error lines (klog E/F), the first 20

    def feed(self, line: str) -> None:
        m = _KLOG.match(line.strip())
        if m is None:
            return
        level, text = m.groups()
        if '"Number of evictions/requests"' in text:
            self.cycles += 1
        elif '"Eviction in background assumed"' in text:
            self.background_evictions += 1
        elif (e := _EVICTING.search(text)) is not None:
            self.evicting_from[e.group(1)] = self.evicting_from.get(e.group(1), 0) + 1
        if level in "EF" and text not in self.errors and len(self.errors) < 20:
            self.errors.append(text)

    @classmethod
    def of(cls, lines: Iterable[str]) -> LogSummary:
        summary = cls()
        for line in lines:
            summary.feed(line)
        return summary
