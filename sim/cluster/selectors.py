"""Label and field selectors: the query-string grammar of `?labelSelector=` / `?fieldSelector=` and the
structured `LabelSelector` / `NodeSelectorRequirement` objects found in specs (PDBs, node affinity).

Why it exists: controllers list "virt-launcher pods on node X" and "VMIs of this VM" with selectors, and PDBs
select the pods they protect; all of it must match as kube-apiserver matches, including the errors for
malformed selectors (400 BadRequest) and unsupported field labels.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sim.cluster.errors import bad_request

_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # = != in notin exists !exists gt lt
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        has = self.key in labels
        value = labels.get(self.key)
        match self.op:
            case "=":
                return has and value == self.values[0]
            case "!=":
                return not has or value != self.values[0]
            case "in":
                return has and value in self.values
            case "notin":
                return not has or value not in self.values
            case "exists":
                return has
            case "!exists":
                return not has
            case "gt" | "lt":
                try:
                    n, bound = int(value or ""), int(self.values[0])
                except ValueError:
                    return False
                return n > bound if self.op == "gt" else n < bound
        return False


Selector = tuple[Requirement, ...]


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts]


def _check_key(key: str, raw: str) -> str:
    if not _KEY.match(key) or len(key.rsplit("/", 1)[-1]) > 63:
        raise bad_request(f'unable to parse requirement: invalid label key "{key}" in "{raw}"')
    return key


def _check_value(value: str, raw: str) -> str:
    if len(value) > 63 or not _VALUE.match(value):
        raise bad_request(f'unable to parse requirement: invalid label value: "{value}" in "{raw}"')
    return value


_SET = re.compile(r"^(\S+)\s+(in|notin)\s*\((.*)\)$")
_CMP = re.compile(r"^([^!=<>\s]+)\s*(==|=|!=|>|<)\s*(.*)$")


def parse_label_selector(text: str | None) -> Selector:
    if not text or not text.strip():
        return ()
    reqs: list[Requirement] = []
    for raw in _split_top_level(text):
        if not raw:
            raise bad_request(f'unable to parse requirement: found "", expected: identifier in "{text}"')
        if m := _SET.match(raw):
            values = tuple(_check_value(v.strip(), raw) for v in m.group(3).split(",") if v.strip() != "")
            reqs.append(Requirement(_check_key(m.group(1), raw), m.group(2), values))
        elif raw.startswith("!"):
            reqs.append(Requirement(_check_key(raw[1:].strip(), raw), "!exists"))
        elif m := _CMP.match(raw):
            key, op, value = m.group(1), m.group(2), m.group(3).strip()
            op = {"==": "=", ">": "gt", "<": "lt"}.get(op, op)
            if op in ("gt", "lt") and not re.fullmatch(r"-?\d+", value):
                raise bad_request(
                    f'unable to parse requirement: for "gt", "lt" operators, value must be an integer in "{raw}"'
                )
            reqs.append(Requirement(_check_key(key, raw), op, (_check_value(value, raw),)))
        else:
            reqs.append(Requirement(_check_key(raw, raw), "exists"))
    return tuple(reqs)


def matches(selector: Selector, labels: Mapping[str, str] | None) -> bool:
    labels = labels or {}
    return all(r.matches(labels) for r in selector)


# ---- field selectors -------------------------------------------------------------------------------------
FieldSelector = tuple[tuple[str, str, str], ...]  # (field, op "="|"!=", value)


def parse_field_selector(text: str | None, allowed: frozenset[str]) -> FieldSelector:
    if not text or not text.strip():
        return ()
    out: list[tuple[str, str, str]] = []
    for raw in text.split(","):
        raw = raw.strip()
        m = re.match(r"^([^!=]+)(==|=|!=)(.*)$", raw)
        if not m:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{raw}'")
        field, op, value = m.group(1).strip(), m.group(2), m.group(3).strip()
        if field not in allowed:
            raise bad_request(f"field label not supported: {field}")
        out.append((field, "!=" if op == "!=" else "=", value))
    return tuple(out)


def field_value(obj: Mapping[str, Any], path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, Mapping):
            return ""
        cur = cur.get(part)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def fields_match(selector: FieldSelector, obj: Mapping[str, Any]) -> bool:
    for field, op, value in selector:
        actual = field_value(obj, field)
        if (actual == value) != (op == "="):
            return False
    return True


# ---- structured selectors in object specs ----------------------------------------------------------------
_OPS: dict[str, Callable[[bool, str | None, list[str]], bool]] = {
    "In": lambda has, v, vs: has and v in vs,
    "NotIn": lambda has, v, vs: not has or v not in vs,
    "Exists": lambda has, v, vs: has,
    "DoesNotExist": lambda has, v, vs: not has,
    "Gt": lambda has, v, vs: has and bool(vs) and _int_cmp(v, vs[0]) > 0,
    "Lt": lambda has, v, vs: has and bool(vs) and _int_cmp(v, vs[0]) < 0,
}


def _int_cmp(a: str | None, b: str) -> int:
    try:
        x, y = int(a or ""), int(b)
    except ValueError:
        return 0
    return (x > y) - (x < y)


def expression_matches(expr: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key = str(expr.get("key", ""))
    op = _OPS.get(str(expr.get("operator", "")))
    if op is None:
        return False
    return op(key in labels, labels.get(key), [str(v) for v in expr.get("values") or []])


def label_selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str] | None) -> bool:
    """metav1.LabelSelector semantics: matchLabels AND matchExpressions; an empty selector matches everything."""
    if selector is None:
        return False
    labels = labels or {}
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    return all(expression_matches(e, labels) for e in selector.get("matchExpressions") or [])
