"""The query of a list or watch request (`ListOptions`), parsed, defaulted and validated once for every kind.

Why it exists: lists and watches of every resource read the same parameters (selectors, `resourceVersion`,
`resourceVersionMatch`, `limit`/`continue`, `sendInitialEvents`, `allowWatchBookmarks`, `timeoutSeconds`), and
client-go's WatchList (`sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true`) must
behave the same for pods as for PersistentVolumeClaims. kube-apiserver's rules, in its order:
- `SetListOptionsDefaults` (WatchList on, as from Kubernetes 1.34): a watch without `sendInitialEvents` and
  `resourceVersionMatch` whose resourceVersion is "" or "0" becomes `sendInitialEvents=true`, NotOlderThan;
- `ValidateListOptions` (apimachinery/pkg/apis/meta/internalversion/validation): the combinations it forbids
  answer 422 Invalid on `ListOptions.meta.k8s.io ""`, with one cause per rule broken;
- a malformed number (`resourceVersion`, `limit`, `timeoutSeconds`) answers 400 BadRequest, never 500.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sim.cluster import errors
from sim.cluster.resources import ResourceType
from sim.cluster.selectors import FieldSelector, Selector, parse_field_selector, parse_label_selector

NOT_OLDER_THAN, EXACT = "NotOlderThan", "Exact"
WATCH_MATCH_NEEDS_INITIAL = "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"
MAX_DIGITS = 19  # the apiserver parses these as 64-bit integers
MAX_TIMEOUT_S = 10**9  # a bigger timeoutSeconds is no different, and keeps float() from overflowing
_TRUE = ("true", "1", "True", "TRUE", "t", "T")


@dataclass(frozen=True)
class ListOptions:
    labels: Selector
    fields: FieldSelector
    resource_version: int | None  # None: "" or "0" (any / most recent)
    match: str  # "" | Exact | NotOlderThan
    limit: int
    continue_token: str | None
    watch: bool
    send_initial_events: bool  # after defaulting: initial ADDED events first
    bookmarks: bool  # allowWatchBookmarks
    timeout_s: float | None

    @property
    def initial_end_bookmark(self) -> bool:
        """The BOOKMARK annotated `k8s.io/initial-events-end` follows the initial events (the cacher sends it
        only to watchers that allow bookmarks)."""
        return self.send_initial_events and self.bookmarks


def _flag(q: Mapping[str, str], key: str) -> bool | None:
    return None if key not in q else q[key] in _TRUE


def _int(q: Mapping[str, str], key: str, what: str) -> int:
    raw = q.get(key, "") or "0"
    if not raw.isascii() or not raw.isdigit() or len(raw) > MAX_DIGITS:
        raise errors.bad_request(f"invalid {what} {raw[:40]!r}")
    return int(raw)


def _forbidden(field: str, message: str) -> errors.Cause:
    return errors.Cause(field, f"Forbidden: {message}", "FieldValueForbidden")


def _not_supported(field: str, value: str, supported: tuple[str, ...]) -> errors.Cause:
    allowed = ", ".join(f'"{s}"' for s in supported)
    return errors.Cause(field, f'Unsupported value: "{value}": supported values: {allowed}', "FieldValueNotSupported")


def _validate(watch: bool, rv: str, match: str, send_initial: bool | None, cont: str) -> list[errors.Cause]:
    rvm = "resourceVersionMatch"
    causes: list[errors.Cause] = []
    if watch:
        if send_initial is not None and match != NOT_OLDER_THAN:
            causes.append(_forbidden(rvm, "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"))
        if match:
            if send_initial is None:
                causes.append(_forbidden(rvm, WATCH_MATCH_NEEDS_INITIAL))
            if match != NOT_OLDER_THAN:
                causes.append(_not_supported(rvm, match, (NOT_OLDER_THAN,)))
            if cont:
                causes.append(_forbidden(rvm, "resourceVersionMatch is forbidden when continue is provided"))
        return causes
    if match:
        if not rv:
            causes.append(_forbidden(rvm, "resourceVersionMatch is forbidden unless resourceVersion is provided"))
        if cont:
            causes.append(_forbidden(rvm, "resourceVersionMatch is forbidden when continue is provided"))
        if match not in (EXACT, NOT_OLDER_THAN):
            causes.append(_not_supported(rvm, match, (EXACT, NOT_OLDER_THAN, "")))
        if match == EXACT and rv == "0":
            causes.append(_forbidden(rvm, 'resourceVersionMatch "exact" is forbidden for resourceVersion "0"'))
    if send_initial is not None:
        causes.append(_forbidden("sendInitialEvents", "sendInitialEvents is forbidden for list"))
    return causes


def parse_list_options(q: Mapping[str, str], rt: ResourceType) -> ListOptions:
    """The options of a collection GET (`?watch=true` or not); raises ApiError 400/422 as kube-apiserver does."""
    watch = bool(_flag(q, "watch"))
    rv, match, cont = q.get("resourceVersion", ""), q.get("resourceVersionMatch", ""), q.get("continue", "")
    send_initial = _flag(q, "sendInitialEvents")
    if watch and send_initial is None and not match and rv in ("", "0"):
        send_initial, match = True, NOT_OLDER_THAN  # SetListOptionsDefaults
    causes = _validate(watch, rv, match, send_initial, cont)
    if causes:
        raise errors.invalid("ListOptions", "meta.k8s.io", "", causes)
    version = _int(q, "resourceVersion", "resource version")
    timeout = min(_int(q, "timeoutSeconds", "timeoutSeconds"), MAX_TIMEOUT_S)
    return ListOptions(
        labels=parse_label_selector(q.get("labelSelector")),
        fields=parse_field_selector(q.get("fieldSelector"), rt.fields),
        resource_version=version or None,
        match=match,
        limit=_int(q, "limit", "limit"),
        continue_token=cont or None,
        watch=watch,
        send_initial_events=bool(send_initial),
        bookmarks=bool(_flag(q, "allowWatchBookmarks")),
        timeout_s=float(timeout) if timeout else None,
    )
