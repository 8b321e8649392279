from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PickRequest(_message.Message):
    __slots__ = ("path", "headers", "body", "subset", "request_id")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PATH_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    SUBSET_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    path: str
    headers: _containers.ScalarMap[str, str]
    body: bytes
    subset: Subset
    request_id: str
    def __init__(self, path: _Optional[str] = ..., headers: _Optional[_Mapping[str, str]] = ..., body: _Optional[bytes] = ..., subset: _Optional[_Union[Subset, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class Subset(_message.Message):
    __slots__ = ("endpoints",)
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    endpoints: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, endpoints: _Optional[_Iterable[str]] = ...) -> None: ...

class PickResponse(_message.Message):
    __slots__ = ("request_id", "endpoint", "fallbacks", "reason", "profile")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    FALLBACKS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    endpoint: str
    fallbacks: _containers.RepeatedScalarFieldContainer[str]
    reason: str
    profile: str
    def __init__(self, request_id: _Optional[str] = ..., endpoint: _Optional[str] = ..., fallbacks: _Optional[_Iterable[str]] = ..., reason: _Optional[str] = ..., profile: _Optional[str] = ...) -> None: ...

class CompleteRequest(_message.Message):
    __slots__ = ("request_id", "served_endpoint", "status", "usage")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SERVED_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    served_endpoint: str
    status: int
    usage: Usage
    def __init__(self, request_id: _Optional[str] = ..., served_endpoint: _Optional[str] = ..., status: _Optional[int] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("prompt_tokens", "completion_tokens", "cached_tokens")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    def __init__(self, prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., cached_tokens: _Optional[int] = ...) -> None: ...

class CompleteResponse(_message.Message):
    __slots__ = ("known",)
    KNOWN_FIELD_NUMBER: _ClassVar[int]
    known: bool
    def __init__(self, known: _Optional[bool] = ...) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("request_id", "profile", "targets", "reason", "error", "shed", "scorers", "endpoints", "filters", "unavailable", "plugin_seconds", "prompt_tokens", "notes")
    class PluginSecondsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class NotesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SHED_FIELD_NUMBER: _ClassVar[int]
    SCORERS_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    UNAVAILABLE_FIELD_NUMBER: _ClassVar[int]
    PLUGIN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    profile: str
    targets: _containers.RepeatedScalarFieldContainer[str]
    reason: str
    error: str
    shed: bool
    scorers: _containers.RepeatedCompositeFieldContainer[ScorerWeight]
    endpoints: _containers.RepeatedCompositeFieldContainer[EndpointExplanation]
    filters: _containers.RepeatedCompositeFieldContainer[FilterResult]
    unavailable: _containers.RepeatedCompositeFieldContainer[Unavailable]
    plugin_seconds: _containers.ScalarMap[str, float]
    prompt_tokens: int
    notes: _containers.ScalarMap[str, str]
    def __init__(self, request_id: _Optional[str] = ..., profile: _Optional[str] = ..., targets: _Optional[_Iterable[str]] = ..., reason: _Optional[str] = ..., error: _Optional[str] = ..., shed: _Optional[bool] = ..., scorers: _Optional[_Iterable[_Union[ScorerWeight, _Mapping]]] = ..., endpoints: _Optional[_Iterable[_Union[EndpointExplanation, _Mapping]]] = ..., filters: _Optional[_Iterable[_Union[FilterResult, _Mapping]]] = ..., unavailable: _Optional[_Iterable[_Union[Unavailable, _Mapping]]] = ..., plugin_seconds: _Optional[_Mapping[str, float]] = ..., prompt_tokens: _Optional[int] = ..., notes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ScorerWeight(_message.Message):
    __slots__ = ("name", "weight")
    NAME_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    name: str
    weight: float
    def __init__(self, name: _Optional[str] = ..., weight: _Optional[float] = ...) -> None: ...

class EndpointExplanation(_message.Message):
    __slots__ = ("endpoint", "total", "scores", "load")
    class ScoresEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    total: float
    scores: _containers.ScalarMap[str, float]
    load: EndpointLoad
    def __init__(self, endpoint: _Optional[str] = ..., total: _Optional[float] = ..., scores: _Optional[_Mapping[str, float]] = ..., load: _Optional[_Union[EndpointLoad, _Mapping]] = ...) -> None: ...

class EndpointLoad(_message.Message):
    __slots__ = ("waiting", "running", "kv_usage", "in_flight", "dispatched_since_scrape", "metrics_age_seconds")
    WAITING_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    KV_USAGE_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    DISPATCHED_SINCE_SCRAPE_FIELD_NUMBER: _ClassVar[int]
    METRICS_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    waiting: int
    running: int
    kv_usage: float
    in_flight: int
    dispatched_since_scrape: int
    metrics_age_seconds: float
    def __init__(self, waiting: _Optional[int] = ..., running: _Optional[int] = ..., kv_usage: _Optional[float] = ..., in_flight: _Optional[int] = ..., dispatched_since_scrape: _Optional[int] = ..., metrics_age_seconds: _Optional[float] = ...) -> None: ...

class FilterResult(_message.Message):
    __slots__ = ("filter", "removed")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    filter: str
    removed: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, filter: _Optional[str] = ..., removed: _Optional[_Iterable[str]] = ...) -> None: ...

class Unavailable(_message.Message):
    __slots__ = ("endpoint", "why")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    WHY_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    why: str
    def __init__(self, endpoint: _Optional[str] = ..., why: _Optional[str] = ...) -> None: ...
