"""The picker's typed configuration: which plugins exist, with which parameters, and which profiles use them.

Why it exists: a scheduling policy is data (llm-d's `EndpointPickerConfig`), so an operator can change weights or
swap a scorer without code, and a mistake is refused at start with *every* error and its path, e.g.
`plugins[2].parameters.blockSize: must be >= 1` or `schedulingProfiles[0].plugins[1].pluginRef: unknown plugin 'foo'`.

`load_config` reads the document (shape checks in `config_document`), then resolves it into `PickerConfig`, which
has no optional fields left: a plugin's name defaults to its type, a scorer's missing weight is 1.0, a profile
without a picker gets `max-score-picker`, and a `single-profile-handler` is added when the document names no profile
handler (as llm-d does). Each plugin's parameters are validated by the plugin's own `Params` model, so defaults live
beside the plugin that owns them.

Which types exist is the `PluginRegistry` the loader is given (`scorer.plugins.default_registry()` when none is): the
resolved `PickerConfig` carries it, and the `Scheduler` builds each plugin through it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import BaseModel

from scorer.config_document import ConfigError, Document, ProfileSpec, read_document, validate
from scorer.framework import NoParams
from scorer.plugins import default_registry
from scorer.registry import PluginRegistry, PluginType

API_VERSIONS = ("autonomic.dev/v1alpha1", "inference.networking.x-k8s.io/v1alpha1")
KIND = "EndpointPickerConfig"
DEFAULT_PICKER = "max-score-picker"
DEFAULT_HANDLER = "single-profile-handler"
DEFAULT_CONFIG_RESOURCE = "default-config.yaml"  # package data of `scorer`

__all__ = [
    "ConfigError",
    "PickerConfig",
    "PluginConfig",
    "ProfileConfig",
    "default_config",
    "default_registry",
    "load_config",
    "parse_config",
]


@dataclass(frozen=True)
class PluginConfig:
    """One plugin instance: its unique name, its registered type and its validated parameters."""

    name: str
    type: str
    params: BaseModel
    auto_added: bool = False  # added by the loader (default picker or profile handler), not written by the user


@dataclass(frozen=True)
class ProfileConfig:
    """A scheduling profile split into its extension points, in the order the document lists them."""

    name: str
    filters: tuple[str, ...]
    scorers: tuple[tuple[str, float], ...]  # (plugin name, weight)
    picker: str


@dataclass(frozen=True)
class PickerConfig:
    plugins: tuple[PluginConfig, ...]
    profiles: tuple[ProfileConfig, ...]
    handler: str  # name of the profile-handler plugin
    registry: PluginRegistry = field(repr=False)  # the plugin types the document was resolved against

    def plugin(self, name: str) -> PluginConfig:
        return next(p for p in self.plugins if p.name == name)

    def profile(self, name: str) -> ProfileConfig:
        return next(p for p in self.profiles if p.name == name)


def load_config(source: str | Path, registry: PluginRegistry | None = None) -> PickerConfig:
    """Read a config from a file (a `Path`, or a one-line string ending in .yaml/.yml) or from YAML text, resolving
    plugin types against `registry` (default: the built-in plugins).

    Raises `ConfigError` listing every problem found, each with its path.
    """
    text = _read(source)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"yaml: {exc}".replace("\n", " ")]) from None
    except RecursionError:  # PyYAML composes nested collections recursively: "[" * 5000
        raise ConfigError(["yaml: collections nested too deeply"]) from None
    return parse_config(data, registry)


def default_config(registry: PluginRegistry | None = None) -> PickerConfig:
    """The configuration shipped as `scorer/default-config.yaml` (docs/picker-plugins.md gives the reasons)."""
    text = resources.files("scorer").joinpath(DEFAULT_CONFIG_RESOURCE).read_text(encoding="utf-8")
    return load_config(text, registry)


def parse_config(data: Any, registry: PluginRegistry | None = None) -> PickerConfig:
    """Resolve an already-parsed document (a mapping) into a `PickerConfig`, plugin types from `registry`."""
    errors: list[str] = []
    doc = read_document(data, API_VERSIONS, KIND, errors)
    resolver = _Resolver(errors, registry if registry is not None else default_registry())
    resolver.add_plugins(doc)
    handler = resolver.handler(len(doc.profiles))
    profiles = [resolver.profile(spec) for _path, spec in _unique_profiles(doc, errors)]
    if not doc.profiles_given:
        errors.append("schedulingProfiles: at least one profile is required")
    resolver.check_references([p.name for p in profiles])
    if errors:
        raise ConfigError(errors)
    return PickerConfig(tuple(resolver.plugins.values()), tuple(profiles), handler, resolver.registry)


@dataclass
class _Resolver:
    """Cross-reference resolution of one document; every problem is appended to `errors`."""

    errors: list[str]
    registry: PluginRegistry
    plugins: dict[str, PluginConfig] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)  # plugin name -> where the document defines it

    def add_plugins(self, doc: Document) -> None:
        for path, spec in doc.plugins:
            name = spec.name or spec.type
            if name in self.paths:
                self.errors.append(f"{path}.name: duplicate plugin name {name!r} (first defined at {self.paths[name]})")
                continue
            self.paths[name] = path
            kind = self.registry.get(spec.type)
            if kind is None:
                known_types = ", ".join(self.registry.names())
                self.errors.append(f"{path}.type: unknown plugin type {spec.type!r} (known: {known_types})")
                continue
            params = validate(kind.params, spec.parameters, f"{path}.parameters", self.errors)
            if params is not None:
                self.plugins[name] = PluginConfig(name, spec.type, params)

    def handler(self, profile_count: int) -> str:
        handlers = [p for p in self.plugins.values() if "profile-handler" in self.kind(p).roles]
        for extra in handlers[1:]:
            self.errors.append(
                f"{self.paths[extra.name]}: a second profile handler {extra.name!r} (already {handlers[0].name!r})"
            )
        handler = handlers[0] if handlers else self.auto_add(DEFAULT_HANDLER)
        if profile_count > 1 and self.kind(handler).single_profile:
            where = "schedulingProfiles" if handler.auto_added else f"{self.paths[handler.name]}.type"
            self.errors.append(f"{where}: {handler.type} runs one profile, but {profile_count} are defined")
        return handler.name

    def profile(self, spec: ProfileSpec) -> ProfileConfig:
        filters: list[str] = []
        scorers: list[tuple[str, float]] = []
        pickers: list[str] = []
        seen: set[str] = set()
        for where, entry in spec.plugins:
            plugin = self.plugins.get(entry.plugin_ref)
            if entry.plugin_ref in seen:
                self.errors.append(f"{where}.pluginRef: {entry.plugin_ref!r} is listed twice in this profile")
                continue
            seen.add(entry.plugin_ref)
            if plugin is None:
                if entry.plugin_ref not in self.paths:  # else its own definition is broken and already reported
                    self.errors.append(f"{where}.pluginRef: unknown plugin {entry.plugin_ref!r}")
                continue
            roles = self.kind(plugin).roles
            if not roles & {"filter", "scorer", "picker", "profile-handler"}:
                self.errors.append(f"{where}.pluginRef: {plugin.name!r} fills no extension point of a profile")
            if "profile-handler" in roles:
                self.errors.append(f"{where}.pluginRef: {plugin.name!r} is a profile handler, not part of a profile")
            if entry.weight is not None and "scorer" not in roles:
                self.errors.append(f"{where}.weight: {plugin.name!r} ({plugin.type}) is not a scorer")
            if "filter" in roles:
                filters.append(plugin.name)
            if "scorer" in roles:
                scorers.append((plugin.name, 1.0 if entry.weight is None else entry.weight))
            if "picker" in roles:
                if pickers:
                    self.errors.append(f"{where}.pluginRef: a second picker {plugin.name!r} (already {pickers[0]!r})")
                pickers.append(plugin.name)
        picker = pickers[0] if pickers else self.auto_add(DEFAULT_PICKER).name
        return ProfileConfig(spec.name, tuple(filters), tuple(scorers), picker)

    def auto_add(self, type_name: str) -> PluginConfig:
        """The loader-added plugin of this type (one shared instance), named after its type when that is free."""
        for plugin in self.plugins.values():
            if plugin.auto_added and plugin.type == type_name:
                return plugin
        name, n = type_name, 1
        while name in self.paths:
            n += 1
            name = f"{type_name}-{n}"
        kind = self.registry.get(type_name)
        if kind is None:  # a registry built without this default
            self.errors.append(f"schedulingProfiles: needs a {type_name}, a plugin type the registry does not have")
        self.paths[name] = f"(added {type_name})"
        params = kind.params() if kind is not None else NoParams()
        self.plugins[name] = PluginConfig(name, type_name, params, auto_added=True)
        return self.plugins[name]

    def kind(self, plugin: PluginConfig) -> PluginType:
        """The plugin's row in the registry (a row with no role for a missing default, already reported)."""
        return self.registry.get(plugin.type) or _NOT_REGISTERED

    def check_references(self, profiles: list[str]) -> None:
        types_by_name: Mapping[str, str] = {p.name: p.type for p in self.plugins.values()}
        for plugin in self.plugins.values():
            check = self.kind(plugin).check_references
            if check is None:
                continue
            for field_path, message in check(plugin.params, types_by_name, profiles):
                self.errors.append(f"{self.paths[plugin.name]}.parameters.{field_path}: {message}")


class _NotRegistered:
    """Stands for a default plugin type that the registry lacks (an error already reported): it fills no role."""

    type_name: ClassVar[str] = "(not registered)"


_NOT_REGISTERED = PluginType.of(_NotRegistered)


def _unique_profiles(doc: Document, errors: list[str]) -> list[tuple[str, ProfileSpec]]:
    seen: dict[str, str] = {}
    unique = []
    for path, spec in doc.profiles:
        if spec.name in seen:
            errors.append(f"{path}.name: duplicate profile name {spec.name!r} (first defined at {seen[spec.name]})")
            continue
        seen[spec.name] = path
        unique.append((path, spec))
    return unique


def _read(source: str | Path) -> str:
    if isinstance(source, Path) or ("\n" not in source and source.strip().endswith((".yaml", ".yml"))):
        path = Path(source)
        try:
            return path.read_text(encoding="utf-8")
        except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
            raise ConfigError([f"{path}: {getattr(exc, 'strerror', None) or exc}"]) from None
    return source
