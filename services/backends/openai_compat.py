"""OpenAI-compatible upstreams (vLLM, llama.cpp, LM Studio, OpenAI itself): chat and images.

With `api = "chat"` chat requests pass through to /chat/completions with every field the caller
sent; with `api = "responses"` they are converted to /responses calls (responses_convert).
The upstream key comes from configuration only; a caller's Relay key never goes upstream.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from typing import IO, Any

import requests
import urllib3
from loguru import logger

from config import BackendSettings, Settings
from services.backends.base import Backend, BackendTools
from services.backends.openai_wire import (
    ChatChunkReader,
    TextChunkReader,
    result_from_chat,
    result_from_text,
    to_chat_body,
    to_text_body,
)
from services.backends.responses_upstream import (
    ResponsesStreamReader,
    as_dict,
    chat_to_responses,
    responses_to_result,
)
from services.common.finite_numbers import finite_float, token_count
from services.common.ndjson import loads
from services.common.outbound import FetchPolicy
from services.common.sse import iter_sse
from services.core.errors import (
    GatewayError,
    ModelNotFoundError,
    RateLimitError,
    UpstreamError,
    UpstreamUnavailableError,
)
from services.core.types import (
    CallContext,
    ChatDelta,
    ChatRequest,
    ChatResult,
    EmbeddingRequest,
    EmbeddingResult,
    GeneratedImage,
    ImageRequest,
    ModelInfo,
    TextRequest,
    result_deltas,
)


class UpstreamRejectedError(GatewayError):
    """The upstream refused the request itself (a 4xx); its status and fields are kept."""

    def __init__(self, message: str, *, status: int, type: str, param: Any, code: Any) -> None:
        super().__init__(
            message,
            param=param if isinstance(param, str) else None,
            code=code if isinstance(code, str) else None,
        )
        self.status = status
        self.type = type


# Hop-by-hop headers (RFC 9110 §7.6.1) and what Relay itself answers for, never passed on.
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}
_NOT_FORWARDED = _HOP_BY_HOP | {
    "host",
    "authorization",
    "x-api-key",
    "cookie",
    "content-length",  # requests sets it again from the body it sends
    "expect",  # the 100-continue exchange was Relay's own
    "x-dify-api-key",
    "x-dify-conversation-id",
    # Who the client is and which proxies it came through: the upstream learns nothing of
    # Relay's callers from these, and a caller cannot pose as another address with them.
    "forwarded",
    "via",
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
    "cf-connecting-ip",
    "x-cluster-client-ip",
}
# In gateway mode the operator's key is one upstream account: a caller may not pick another
# organisation or project of it (docs/backends.md "Pass-through of everything else").
_ACCOUNT_CHOICE = {"openai-organization", "openai-project"}


def _end_to_end(headers: Iterable[tuple[str, str]], dropped: set[str]) -> list[tuple[str, str]]:
    """Keep the headers meant for the far end: not `dropped`, not named in `Connection`."""
    pairs = list(headers)
    nominated = {
        token.strip().lower()
        for name, value in pairs
        if name.lower() == "connection"
        for token in value.split(",")
    }
    return [
        (name, value)
        for name, value in pairs
        if (low := name.lower()) not in dropped
        and low not in nominated
        and not low.startswith("x-forwarded-")
    ]


class _SizedBody:
    """A request body of known length, read while it is sent: requests then streams it with a
    Content-Length instead of buffering it or switching to chunked encoding."""

    def __init__(self, stream: IO[bytes], length: int) -> None:
        self.stream, self.length = stream, length

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[bytes]:
        return iter(lambda: self.stream.read(65536), b"")

    def read(self, size: int = -1) -> bytes:
        return self.stream.read(size)


class OpenAICompatBackend(Backend):
    type = "openai"
    label = "OpenAI-compatible"

    def __init__(self, settings: BackendSettings, shared: Settings, tools: BackendTools) -> None:
        super().__init__(settings, shared, tools)
        self.api = settings.api
        self.max_tokens_field = settings.max_tokens_field
        self.passthrough = settings.passthrough
        self.passthrough_auth = settings.passthrough_auth
        self.passthrough_paths = settings.passthrough_paths
        self._headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        self.created = int(time.time())

    def list_models(self) -> list[ModelInfo]:
        with self._send("GET", "/models", headers=self._headers) as resp:
            body = self._json(resp)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise UpstreamError(f"{self.title} sent a model list without `data`.")
        return [
            ModelInfo(
                id=m["id"],
                created=m["created"] if isinstance(m.get("created"), int) else self.created,
                owned_by=self.name,
            )
            for m in data
            if isinstance(m, dict) and isinstance(m.get("id"), str)
        ]

    def chat(self, req: ChatRequest, ctx: CallContext) -> ChatResult:
        if self.api == "responses":
            return responses_to_result(
                self._post("/responses", chat_to_responses(req, False)), self.title
            )
        return result_from_chat(
            self._post("/chat/completions", to_chat_body(self._limit_named(req), False)),
            self.title,
        )

    def stream_chat(self, req: ChatRequest, ctx: CallContext) -> Generator[ChatDelta, None, None]:
        if self.api == "responses":
            yield from self._stream_responses(req)
            return
        yield from self._stream(
            "/chat/completions",
            to_chat_body(self._limit_named(req), True),
            ChatChunkReader(self.title),
            lambda body: result_from_chat(body, self.title),
        )

    def _limit_named(self, req: ChatRequest) -> ChatRequest:
        if self.max_tokens_field == "as_sent":
            return req
        return dataclasses.replace(req, max_tokens_names=(self.max_tokens_field,))

    def _stream_responses(self, req: ChatRequest) -> Generator[ChatDelta, None, None]:
        reader = ResponsesStreamReader(self.title)
        body = chat_to_responses(req, True)
        resp = self._send("POST", "/responses", json=body, stream=True, headers=self._headers)
        try:
            for event in self._events(resp):
                yield from reader.feed(event)
                if reader.finished:
                    return
            raise UpstreamError(f"{self.title} ended the stream before the reply was complete.")
        finally:
            resp.close()

    def _stream(
        self,
        path: str,
        body: dict[str, Any],
        reader: ChatChunkReader | TextChunkReader,
        whole: Callable[[Any], ChatResult],
    ) -> Generator[ChatDelta, None, None]:
        resp = self._send("POST", path, json=body, stream=True, headers=self._headers)
        seen = False
        try:
            for event in self._events(resp):
                seen = True
                yield from reader.feed(event)
        finally:
            resp.close()
        if seen:
            yield from reader.finish()
            return
        # Some servers (llama.cpp's Python server) refuse a request, such as a prompt longer
        # than the context, with a 200 and an empty stream. Nothing has reached the caller yet:
        # ask once more without streaming, which brings the refusal itself (or the reply).
        logger.warning("{}: empty stream; asking again without streaming", self.title)
        once = {k: v for k, v in body.items() if k != "stream_options"} | {"stream": False}
        try:
            reply = self._post(path, once)
        except UpstreamUnavailableError:
            # The server may close the connection it sent the empty stream on just as it goes
            # back to the pool; one more try then gets a fresh one.
            reply = self._post(path, once)
        yield from result_deltas(whole(reply))

    def _events(self, resp: requests.Response) -> Iterator[Any]:
        """The stream's JSON events, up to `[DONE]`."""
        body = self._iter_body(resp)
        for _name, data in iter_sse(body):
            if data.strip() == "[DONE]":
                self._release(resp, body)
                return
            try:
                yield loads(data)
            except ValueError:
                raise UpstreamError(f"{self.title} sent a malformed event.") from None

    def complete_text(self, req: TextRequest, ctx: CallContext) -> ChatResult:
        """Legacy completions go to the upstream's own /completions, whichever `api` is set."""
        return result_from_text(self._post("/completions", to_text_body(req, False)), self.title)

    def stream_text(self, req: TextRequest, ctx: CallContext) -> Generator[ChatDelta, None, None]:
        yield from self._stream(
            "/completions",
            to_text_body(req, True),
            TextChunkReader(self.title),
            lambda body: result_from_text(body, self.title),
        )

    def generate_images(self, req: ImageRequest, ctx: CallContext) -> list[GeneratedImage]:
        body: dict[str, Any] = {
            "model": req.model,
            "prompt": req.prompt,
            "n": req.n,
            "response_format": req.response_format,
        }
        if req.size:
            body["size"] = req.size
        if req.user:
            body["user"] = req.user
        body.update(req.extra)
        body.update(req.options)  # the X-Replicate-* settings travel as extra body fields
        reply = self._post("/images/generations", body)
        data = reply.get("data") if isinstance(reply, dict) else None
        if not isinstance(data, list):
            raise UpstreamError(f"{self.title} sent an image reply without `data`.")
        images = []
        for item in data:
            if not isinstance(item, dict):
                continue
            url, b64 = item.get("url"), item.get("b64_json")
            if req.response_format == "b64_json" and not b64 and isinstance(url, str):
                # Its own hosts' links are trusted; links elsewhere only to public hosts.
                policy = FetchPolicy(self.own_origins, allow_private=self.images.allow_private)
                b64 = self._download_image_b64(url if "://" in url else self.url + url, policy)
            images.append(
                GeneratedImage(
                    url=url if isinstance(url, str) and not b64 else None,
                    b64_json=b64 if isinstance(b64, str) else None,
                    revised_prompt=item.get("revised_prompt")
                    if isinstance(item.get("revised_prompt"), str)
                    else None,
                )
            )
        return images

    def embed(self, req: EmbeddingRequest, ctx: CallContext) -> EmbeddingResult:
        body: dict[str, Any] = {
            **req.extra,
            "model": req.model,
            "input": list(req.inputs),
            "encoding_format": "float",
        }
        if req.dimensions is not None:
            body["dimensions"] = req.dimensions
        reply = self._post("/embeddings", body)
        try:
            rows = sorted(reply["data"], key=lambda row: row["index"])
            vectors = tuple(tuple(finite_float(x) for x in row["embedding"]) for row in rows)
            tokens = token_count(as_dict(reply.get("usage")).get("prompt_tokens"))
        except (KeyError, TypeError, ValueError, OverflowError):
            raise UpstreamError(f"{self.title} sent embeddings Relay cannot read.") from None
        return EmbeddingResult(vectors, tokens)

    def forward(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: IO[bytes] | None,
        length: int | None,
        caller_auth: str | None,
    ) -> tuple[int, list[tuple[str, str]], Iterator[bytes]]:
        """Pass a request Relay does not serve to this upstream, streaming both bodies.

        Exactly one Authorization goes upstream: this backend's key (gateway mode) or the
        caller's own (caller mode), never Relay's key and never both.
        """
        dropped = _NOT_FORWARDED | (
            _ACCOUNT_CHOICE if self.passthrough_auth == "gateway" else set()
        )
        out = dict(_end_to_end(headers.items(), dropped))
        auth = (
            self._headers.get("Authorization")
            if self.passthrough_auth == "gateway"
            else caller_auth
        )
        if auth:
            out["Authorization"] = auth
        # A known length goes with a Content-Length; otherwise the body is sent chunked.
        data: Any = None
        if body is not None:
            data = _SizedBody(body, length) if length else iter(lambda: body.read(65536), b"")
        resp = self._send(
            method,
            path,
            data=data,
            headers=out,
            stream=True,
            keep_errors=True,
            allow_redirects=False,
        )
        # The reply's organisation and project name the operator's account: not the caller's.
        hidden = _HOP_BY_HOP | (_ACCOUNT_CHOICE if self.passthrough_auth == "gateway" else set())
        reply_headers = _end_to_end(resp.headers.items(), hidden)
        return resp.status_code, reply_headers, self._raw_body(resp)

    def _raw_body(self, resp: requests.Response) -> Iterator[bytes]:
        # Bytes as the upstream sent them (still compressed, if it compressed): the headers
        # that describe them are passed on too.
        try:
            yield from resp.raw.stream(65536, decode_content=False)
        except (requests.RequestException, OSError, urllib3.exceptions.HTTPError):
            logger.warning("{}: pass-through body cut off", self.title)
        finally:
            resp.close()

    # --- HTTP -----------------------------------------------------------------------------

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        with self._send("POST", path, json=body, headers=self._headers) as resp:
            return self._json(resp)

    def _error_from_response(self, resp: requests.Response) -> GatewayError:
        status = resp.status_code
        error: dict[str, Any] = {}
        try:
            body = resp.json()
            found = body.get("error", body) if isinstance(body, dict) else {}
            error = found if isinstance(found, dict) else {"message": str(found)}
        except ValueError:
            error = {"message": resp.text[:300]}
        message = str(error.get("message") or error.get("detail") or f"HTTP {status}")
        detail = f"{self.title}: {message}"
        if status in (401, 403):
            # The key is the operator's, not the caller's: a gateway fault, not a 401.
            return UpstreamError(f"{self.title} refused the gateway's key (HTTP {status}).")
        if status == 404 and error.get("code") == "model_not_found":
            return ModelNotFoundError(detail, param="model")
        if status == 429:
            retry = resp.headers.get("Retry-After", "")
            return RateLimitError(detail, retry_after=int(retry) if retry.isdigit() else 5)
        if 400 <= status < 500:
            kind = error.get("type")
            return UpstreamRejectedError(
                detail,
                status=status,
                type=kind if isinstance(kind, str) and kind else "invalid_request_error",
                param=error.get("param"),
                code=error.get("code"),
            )
        return UpstreamError(f"{self.title} failed (HTTP {status}): {message}")
