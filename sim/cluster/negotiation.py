"""Content negotiation: which request bodies the twin decodes and which answers it can give, as Status errors.

Why it exists: client-go configured for protobuf (as the descheduler and most controllers are) sends
`Content-Type: application/vnd.kubernetes.protobuf` bodies and `Accept: application/vnd.kubernetes.protobuf,
application/json`. The twin speaks JSON only, so it must say so the way kube-apiserver's negotiation does, never
with a 500:
- a body in another media type than JSON: 415 UnsupportedMediaType, naming the accepted types (the client sees
  why; the twin logs it at info level);
- a JSON body that does not decode (invalid UTF-8, bad syntax, an integer beyond Python's digit limit) or nests
  deeper than `MAX_DEPTH`: 400 BadRequest, as the apiserver's decoder answers;
- an `Accept` header that allows no JSON answer (protobuf, YAML or CBOR only): 406 NotAcceptable. A list that
  includes `application/json` (or a wildcard) gets JSON, whatever comes first.
A request without a Content-Type is read as JSON (kube-apiserver refuses it; the twin is lenient with hand-made
curl requests).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from sim.cluster import errors

log = logging.getLogger("autonomic.cluster.api")

JSON = "application/json"
ACCEPTED_BODIES = (JSON,)
PATCH_TYPES = {
    "application/json-patch+json": "json",
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
}
ANSWERS = (JSON, "application/*", "*/*")
MAX_DEPTH = 100  # objects nested deeper are refused before any code walks them recursively


def media_type(header: str) -> str:
    """`type/subtype` of a Content-Type or Accept entry, lower case, without parameters."""
    return header.split(";", 1)[0].strip().lower()


def accepts_json(accept: str) -> bool:
    """Whether an Accept header allows a JSON answer (a missing or empty header does)."""
    if not accept.strip():
        return True
    return any(media_type(part) in ANSWERS for part in accept.split(","))


def not_acceptable() -> errors.ApiError:
    return errors.ApiError(
        406, "NotAcceptable", f"only the following media types are accepted: {', '.join(ACCEPTED_BODIES)}"
    )


def _depth_exceeded(value: Any) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        cur, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        if isinstance(cur, dict):
            stack.extend((v, depth + 1) for v in cur.values())
        elif isinstance(cur, list):
            stack.extend((v, depth + 1) for v in cur)
    return False


def decode_json(raw: bytes) -> Any:
    """The JSON value of a body; 400 BadRequest for anything that is not one."""
    if not raw:
        raise errors.bad_request("the request body is empty")
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, int digit limit
        raise errors.bad_request(f"couldn't get version/kind; json parse error: {_short(exc)}") from None
    if _depth_exceeded(value):
        raise errors.bad_request(f"couldn't get version/kind; json parse error: exceeded max depth of {MAX_DEPTH}")
    return value


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "..."


def unsupported(request: web.Request, content_type: str, accepted: tuple[str, ...]) -> errors.ApiError:
    log.info(
        "unsupported media type",
        extra={"method": request.method, "path": request.path, "content_type": content_type},
    )
    return errors.unsupported_media_type(accepted)


async def read_body(request: web.Request) -> Any:
    """The decoded body of a create, update or subresource POST: JSON only (415 for any other media type)."""
    content_type = request.headers.get("Content-Type", "")
    if media_type(content_type) not in ("", *ACCEPTED_BODIES):
        raise unsupported(request, content_type, ACCEPTED_BODIES)
    return decode_json(await request.read())


async def read_patch(request: web.Request) -> tuple[str, Any]:
    """(patch type, decoded body) of a PATCH; 415 for a patch type the twin does not apply."""
    content_type = request.headers.get("Content-Type", "")
    patch_type = PATCH_TYPES.get(media_type(content_type))
    if patch_type is None:
        raise unsupported(request, content_type, tuple(PATCH_TYPES))
    return patch_type, decode_json(await request.read())
