"""The table of plugin types the config loader resolves `type:` against, and the run-time inputs plugins are built with.

Why it exists: which plugin types exist is data that the caller chooses, not state that imports fill in. A
`PluginRegistry` is an immutable table `type name -> PluginType` (the class that implements it, its typed `Params`
model, the factory that builds an instance). `scorer.plugins.default_registry()` is the shipped table; a test or an
embedding program adds its own types with `default_registry().with_types(PluginType.of(MyScorer))` and passes the
result to `load_config`. The resolved `PickerConfig` carries the registry it was checked against, so the `Scheduler`
builds each plugin with the same factory, and nothing is looked up in a module-level global.

A plugin that reads state which the process fills from the outside (the precise-prefix-cache-scorer's index of KV
events and its cache of `/tokenize` answers) gets it from its factory's `PluginRuntime`: the Scheduler is given one
(`Scheduler(config, runtime)`), the factory asks it for the plugin's inputs by name, and the process then wires its
I/O onto exactly those objects (`scorer.sources.precise_inputs`). Tests hand in pre-filled inputs the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel

from scorer.framework import NoParams, Plugin, ReferenceCheck, plugin_roles

T = TypeVar("T")

__all__ = ["PluginFactory", "PluginRegistry", "PluginRuntime", "PluginType", "params_model"]


class PluginRuntime:
    """Run-time inputs of plugins, by plugin name, handed to the factories as the Scheduler builds the plugins.

    `provide(name, kind, make)` returns the object given for that plugin (`PluginRuntime({name: obj})`), or makes
    one and keeps it, so that whoever owns the runtime can find and feed it afterwards (`provided(kind)`).
    """

    def __init__(self, given: Mapping[str, object] | None = None) -> None:
        self._inputs: dict[str, object] = dict(given or {})

    def provide(self, name: str, kind: type[T], make: Callable[[], T]) -> T:
        found = self._inputs.get(name)
        if found is None:
            made = make()
            self._inputs[name] = made
            return made
        if not isinstance(found, kind):
            raise TypeError(f"plugin {name!r}: run-time input is a {type(found).__name__}, not a {kind.__name__}")
        return found

    def provided(self, kind: type[T]) -> dict[str, T]:
        """The inputs of this kind, by plugin name, in the order they were given or made."""
        return {name: obj for name, obj in self._inputs.items() if isinstance(obj, kind)}


PluginFactory = Callable[[str, Any, PluginRuntime], Plugin]
"""`(name, validated params, runtime) -> plugin instance`."""


def params_model(cls: type) -> type[BaseModel]:
    """A plugin class's `Params` model (`NoParams` when it declares none)."""
    model = getattr(cls, "Params", NoParams)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise TypeError(f"{cls.__name__}.Params must be a pydantic model")
    return model


@dataclass(frozen=True)
class PluginType:
    """One row of the table: the `type:` name, the class (its roles, class-level hooks), its parameters, a factory."""

    name: str
    cls: type
    params: type[BaseModel]
    factory: PluginFactory = field(compare=False)

    @classmethod
    def of(cls, plugin_cls: type, factory: PluginFactory | None = None) -> PluginType:
        """The row for a plugin class: its `type_name`, its `Params`, built as `plugin_cls(name, params)` by default."""
        name = getattr(plugin_cls, "type_name", None)
        if not isinstance(name, str) or not name:
            raise TypeError(f"{plugin_cls.__name__} must declare a non-empty type_name")
        return cls(name, plugin_cls, params_model(plugin_cls), factory or _constructor(plugin_cls))

    @property
    def roles(self) -> frozenset[str]:
        return plugin_roles(self.cls)

    @property
    def single_profile(self) -> bool:
        """A profile handler that can only run one profile (the loader refuses it with several)."""
        return bool(getattr(self.cls, "single_profile", False))

    @property
    def check_references(self) -> ReferenceCheck | None:
        check: ReferenceCheck | None = getattr(self.cls, "check_references", None)
        return check

    def build(self, name: str, params: BaseModel, runtime: PluginRuntime) -> Plugin:
        return self.factory(name, params, runtime)


def _constructor(plugin_cls: type) -> PluginFactory:
    def construct(name: str, params: Any, runtime: PluginRuntime) -> Plugin:
        plugin: Plugin = plugin_cls(name, params)
        return plugin

    return construct


class PluginRegistry:
    """An immutable table of plugin types by name; a second row for a name already present is refused."""

    def __init__(self, types: Iterable[PluginType] = ()) -> None:
        table: dict[str, PluginType] = {}
        for row in types:
            if row.name in table:
                raise ValueError(f"plugin type {row.name!r} registered twice")
            table[row.name] = row
        self._types = table

    def with_types(self, *types: PluginType) -> PluginRegistry:
        """A new registry: this one plus `types` (a name already in the table is refused with `ValueError`)."""
        return PluginRegistry([*self._types.values(), *types])

    def get(self, name: str) -> PluginType | None:
        return self._types.get(name)

    def __getitem__(self, name: str) -> PluginType:
        return self._types[name]

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def __iter__(self) -> Iterator[str]:
        return iter(self._types)

    def __len__(self) -> int:
        return len(self._types)

    def names(self) -> list[str]:
        """The type names, sorted (what an unknown-type error lists)."""
        return sorted(self._types)

    def __repr__(self) -> str:
        return f"PluginRegistry({', '.join(self.names())})"
