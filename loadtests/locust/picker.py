"""Locust users that speak Envoy's ext_proc protocol straight to the endpoint picker: its decision latency and rate.

Why it exists: through Envoy, the picker's cost hides among the proxy's and the model servers'; here each user plays
Envoy for one request after another on the picker's gRPC port (`--host 127.0.0.1:9002`), in the picker's default
FULL_DUPLEX_STREAMED mode: request headers, the body with end of stream, then (once the decision is back) response
headers and a JSON response body with usage, so the picker's in-flight accounting closes as in production. The
decision latency (request body sent -> the headers answer with the chosen endpoint) is reported as request type
`ext_proc`, name `decision`; a rejection (the picker's immediate response, e.g. 503 with no ready endpoint) is a
failure. Prompts: a shared document out of a few plus a unique question, so prefix scoring has work to do.

The highest rate per CPU core: run closed loop (`wait_time` 0) with enough users to saturate, and the picker pinned
to one core (`taskset -c 1 autonomic picker ...`): the RPS locust reports is that rate (see loadtests/README.md).

    locust -f loadtests/locust/picker.py --headless -u 8 -r 8 -t 30s --host 127.0.0.1:9002 \
        --csv out/locust/picker --html out/locust/picker.html
"""

from __future__ import annotations

import itertools
import json
import random
import time
from collections.abc import Iterator
from typing import Any

import grpc
import grpc.experimental.gevent as grpc_gevent
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from gevent.event import Event
from locust import User, constant, events, task

from scorer.extproc.protocol import DESTINATION_KEY

grpc_gevent.init_gevent()  # grpc's own threads would block locust's gevent loop

_ids = itertools.count()


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--model", default="meta-llama/Llama-3.1-8B-Instruct", help="model field of every request")
    parser.add_argument("--prompt-words", type=int, default=2000, help="words per shared document")


def _head(pairs: dict[str, str], *, end_of_stream: bool = False) -> pb.HttpHeaders:
    headers = [base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in pairs.items()]
    return pb.HttpHeaders(headers=base_pb2.HeaderMap(headers=headers), end_of_stream=end_of_stream)


def _document(k: int, words: int) -> str:
    rng = random.Random(k)
    return " ".join(f"d{k}w{rng.randrange(9000)}" for _ in range(words))


class ExtProcUser(User):
    """Plays Envoy for one request at a time; the host is the picker's ext_proc address (host:port)."""

    wait_time = constant(0)

    def on_start(self) -> None:
        if not self.host:
            raise ValueError("--host must be the picker's ext_proc address, e.g. 127.0.0.1:9002")
        target = self.host.removeprefix("http://").removeprefix("grpc://")
        self.channel = grpc.insecure_channel(target)
        self.stub = pb_grpc.ExternalProcessorStub(self.channel)
        opts = self.environment.parsed_options
        self.model = opts.model if opts is not None else "meta-llama/Llama-3.1-8B-Instruct"
        words = opts.prompt_words if opts is not None else 2000
        self.docs = [_document(k, words) for k in range(8)]  # the same documents in every user
        self.rng = random.Random()

    def on_stop(self) -> None:
        self.channel.close()

    def _messages(self, rid: str, body: bytes, decided: Event, go: list[bool]) -> Iterator[pb.ProcessingRequest]:
        head = {":path": "/v1/completions", ":method": "POST", "content-type": "application/json", "x-request-id": rid}
        yield pb.ProcessingRequest(request_headers=_head(head))
        yield pb.ProcessingRequest(request_body=pb.HttpBody(body=body, end_of_stream=True))
        decided.wait(30)  # the response phase starts once the picker has answered, as with a real upstream
        if not go[0]:
            return  # no decision: half-close, as Envoy would after a rejection
        yield pb.ProcessingRequest(response_headers=_head({":status": "200", "content-type": "application/json"}))
        usage = {"prompt_tokens": len(body) // 4, "completion_tokens": 8, "total_tokens": len(body) // 4 + 8}
        answer = {"id": rid, "object": "text_completion", "choices": [{"index": 0, "text": "ok"}], "usage": usage}
        yield pb.ProcessingRequest(response_body=pb.HttpBody(body=json.dumps(answer).encode(), end_of_stream=True))

    @task
    def decision(self) -> None:
        rid = f"locust-{next(_ids)}"
        prompt = self.rng.choice(self.docs) + f" question {rid}: " + str(self.rng.getrandbits(64))
        body = json.dumps({"model": self.model, "prompt": prompt, "max_tokens": 8}).encode()
        decided, go = Event(), [False]
        started = time.perf_counter()
        latency_ms: float | None = None
        error: Exception | None = None
        call = self.stub.Process(self._messages(rid, body, decided, go), timeout=30)
        try:
            for resp in call:
                kind = resp.WhichOneof("response")
                if kind == "immediate_response":
                    error = RuntimeError(f"rejected: HTTP {resp.immediate_response.status.code}")
                    break
                if kind == "request_headers" and latency_ms is None:
                    mutation = resp.request_headers.response.header_mutation.set_headers
                    if not any(h.header.key == DESTINATION_KEY for h in mutation):
                        error = RuntimeError("the headers answer names no endpoint")
                        break
                    latency_ms = (time.perf_counter() - started) * 1e3
                    go[0] = True
                    decided.set()
        except grpc.RpcError as exc:
            error = RuntimeError(f"gRPC {exc.code().name}: {exc.details()}")
        finally:
            decided.set()  # never leave the request iterator waiting
            if error is not None:
                call.cancel()
        if error is None and latency_ms is None:
            error = RuntimeError("the stream ended without a decision")
        self.environment.events.request.fire(
            request_type="ext_proc",
            name="decision",
            response_time=latency_ms if latency_ms is not None else (time.perf_counter() - started) * 1e3,
            response_length=len(body),
            exception=error,
            context={},
        )
