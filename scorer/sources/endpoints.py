"""Static endpoints for local mode: `--endpoints host:port,...` or an endpoints file, checked where they enter.

Why it exists: before Kubernetes discovery (a later issue) the pool is a fixed list, and a typo in it should stop
the picker at start with every mistake and its path (`endpoints[2].address: ...`) rather than route to nowhere.

The file is YAML:

```yaml
endpoints:
- 10.0.0.7:8000                       # a bare address
- address: 10.0.0.8:8000              # or a mapping with an optional pod name and labels
  name: vllm-1
  labels: {gpu: h100}
```
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from scorer.config_document import format_errors
from scorer.types import Endpoint


class EndpointsError(ValueError):
    """Invalid endpoints; `errors` holds one `path: message` line per problem."""

    def __init__(self, source: str, errors: Sequence[str]):
        self.errors = list(errors)
        super().__init__(f"invalid endpoints ({source}):\n" + "\n".join(f"  {e}" for e in self.errors))


class _EndpointSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    address: str = Field(min_length=1)
    name: str = ""
    labels: dict[str, str] = Field(default_factory=dict)


def parse_endpoint_list(text: str, source: str = "--endpoints") -> list[Endpoint]:
    """`host:port,host:port,...` (spaces and empty items ignored)."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    return _check([(f"{source}[{i}]", {"address": item}) for i, item in enumerate(items)], source)


def load_endpoints_file(path: Path) -> list[Endpoint]:
    """Read and check an endpoints file; raises `EndpointsError` listing every problem."""
    source = str(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise EndpointsError(source, [f"{path}: {exc.strerror or exc}"]) from None
    except yaml.YAMLError as exc:
        raise EndpointsError(source, [f"yaml: {exc}".replace("\n", " ")]) from None
    return parse_endpoints_document(data, source)


def parse_endpoints_document(data: Any, source: str = "endpoints file") -> list[Endpoint]:
    """The `{endpoints: [...]}` document, already parsed from YAML."""
    if not isinstance(data, dict):
        raise EndpointsError(source, [f"document: must be a mapping with 'endpoints', got {type(data).__name__}"])
    errors = [f"{key}: unknown field (expected endpoints)" for key in data if key != "endpoints"]
    entries = data.get("endpoints")
    if not isinstance(entries, list):
        errors.append(f"endpoints: must be a list, got {type(entries).__name__}")
        raise EndpointsError(source, errors)
    items = [(f"endpoints[{i}]", {"address": e} if isinstance(e, str) else e) for i, e in enumerate(entries)]
    return _check(items, source, errors)


def _check(items: list[tuple[str, Any]], source: str, errors: list[str] | None = None) -> list[Endpoint]:
    errors = list(errors or [])
    endpoints: list[Endpoint] = []
    first_seen: dict[str, str] = {}
    for path, raw in items:
        try:
            spec = _EndpointSpec.model_validate(raw)
        except ValidationError as exc:
            errors.extend(format_errors(exc, path))
            continue
        try:
            endpoint = Endpoint(spec.address.strip(), spec.name, dict(spec.labels))
        except ValueError as exc:
            errors.append(f"{path}.address: {exc}")
            continue
        if endpoint.address in first_seen:
            errors.append(f"{path}.address: duplicate {endpoint.address!r} (first at {first_seen[endpoint.address]})")
            continue
        first_seen[endpoint.address] = path
        endpoints.append(endpoint)
    if not items and not errors:
        errors.append("endpoints: at least one endpoint is required")
    if errors:
        raise EndpointsError(source, errors)
    return endpoints
