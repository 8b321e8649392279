"""The shape of an `EndpointPickerConfig` document, checked entry by entry, with errors written as paths.

Why it exists: pydantic validates shapes well but stops at the first broken list entry of a model, and its messages
name tuples (`('plugins', 2, 'parameters', 'blockSize')`). This module validates each plugin and profile entry on its
own, so one mistake never hides another, and turns every error into `plugins[2].parameters.blockSize: must be >= 1`.
Cross-references (unknown plugins, roles, weights) are resolved afterwards by `scorer.config`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel


class ConfigError(ValueError):
    """The config is invalid; `errors` holds one `path: message` line per problem, and the message lists them all."""

    def __init__(self, errors: Sequence[str]):
        self.errors = list(errors)
        super().__init__("invalid EndpointPickerConfig:\n" + "\n".join(f"  {e}" for e in self.errors))


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True)


class PluginSpec(_Entry):
    type: str = Field(min_length=1)
    name: str | None = Field(default=None, min_length=1)
    parameters: dict[str, Any] = Field(default_factory=dict)


class ProfilePluginSpec(_Entry):
    plugin_ref: str = Field(min_length=1)
    weight: float | None = Field(default=None, ge=0, allow_inf_nan=False)


class _ProfileShape(_Entry):
    name: str = Field(min_length=1)
    plugins: list[Any] = Field(default_factory=list)  # each entry is checked on its own


@dataclass(frozen=True)
class ProfileSpec:
    """A profile whose name is valid, with the plugin entries that passed their own checks (and their paths)."""

    name: str
    plugins: list[tuple[str, ProfilePluginSpec]]


@dataclass
class Document:
    """The entries that passed their own checks, each with its path (`plugins[3]`) for later messages."""

    plugins: list[tuple[str, PluginSpec]] = field(default_factory=list)
    profiles: list[tuple[str, ProfileSpec]] = field(default_factory=list)
    profiles_given: bool = False


TOP_LEVEL_KEYS = ("apiVersion", "kind", "plugins", "schedulingProfiles")
M = TypeVar("M", bound=BaseModel)


def read_document(data: Any, api_versions: Sequence[str], kind: str, errors: list[str]) -> Document:
    """Check the top level and every entry; append errors; return the entries that are well formed."""
    doc = Document()
    if not isinstance(data, dict):
        errors.append(f"document: must be a mapping, got {type(data).__name__}")
        return doc
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            errors.append(f"{key}: unknown field (expected one of {', '.join(TOP_LEVEL_KEYS)})")
    if data.get("apiVersion") not in api_versions:
        errors.append(f"apiVersion: must be one of {', '.join(api_versions)}, got {data.get('apiVersion')!r}")
    if data.get("kind") != kind:
        errors.append(f"kind: must be {kind}, got {data.get('kind')!r}")
    for path, entry in _entries(data, "plugins", errors):
        spec = validate(PluginSpec, entry, path, errors)
        if spec is not None:
            doc.plugins.append((path, spec))
    doc.profiles_given = bool(data.get("schedulingProfiles"))
    for path, entry in _entries(data, "schedulingProfiles", errors):
        shape = validate(_ProfileShape, entry, path, errors)
        if shape is None:
            continue
        valid: list[tuple[str, ProfilePluginSpec]] = []
        for i, ref in enumerate(shape.plugins):
            ref_spec = validate(ProfilePluginSpec, ref, f"{path}.plugins[{i}]", errors)
            if ref_spec is not None:
                valid.append((f"{path}.plugins[{i}]", ref_spec))
        doc.profiles.append((path, ProfileSpec(shape.name, valid)))
    return doc


def validate(model: type[M], value: Any, path: str, errors: list[str]) -> M | None:
    """`model.model_validate(value)`, with every error appended as `path.field: message`."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        errors.extend(format_errors(exc, path))
        return None


def format_errors(exc: ValidationError, prefix: str) -> list[str]:
    return [f"{join_path(prefix, err['loc'])}: {_message(err)}" for err in exc.errors()]


def join_path(prefix: str, loc: Sequence[int | str]) -> str:
    path = prefix
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "document"


def _entries(data: dict[str, Any], key: str, errors: list[str]) -> list[tuple[str, Any]]:
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        errors.append(f"{key}: must be a list, got {type(value).__name__}")
        return []
    return [(f"{key}[{i}]", entry) for i, entry in enumerate(value)]


_BOUND_MESSAGES = {
    "greater_than_equal": ("ge", ">="),
    "greater_than": ("gt", ">"),
    "less_than_equal": ("le", "<="),
    "less_than": ("lt", "<"),
}


def _message(err: Any) -> str:
    kind, ctx = err.get("type", ""), err.get("ctx") or {}
    if kind in _BOUND_MESSAGES:
        key, symbol = _BOUND_MESSAGES[kind]
        return f"must be {symbol} {ctx.get(key)}"
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "string_too_short":
        return "must not be empty"
    if kind in ("model_type", "dict_type"):
        return "must be a mapping"
    return str(err.get("msg", "invalid"))
