"""What every backend offers, and the one place where `requests` errors become GatewayErrors."""

from __future__ import annotations

import base64
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import requests
from loguru import logger
from urllib3.exceptions import ReadTimeoutError

from config import BackendSettings, Settings
from services.backends.hosts import HostPool, label
from services.backends.image_inputs import ImageLoader
from services.backends.transport import Transport
from services.common.outbound import FetchPolicy, FetchRefusedError, fetch_guarded, shown_url
from services.core import cutoff
from services.core.collector import collect
from services.core.errors import (
    GatewayError,
    UnsupportedError,
    UpstreamError,
    UpstreamTimeoutError,
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
    ToolCall,
    new_id,
)
from services.state.file_store import LastingFiles
from services.state.kv_store import StoreFactory

# How long a finished stream waits for the end of its HTTP body to reuse the connection.
END_OF_BODY_WAIT = 0.05


@dataclass(frozen=True, slots=True)
class BackendTools:
    """What the gateway builds once and every backend may use."""

    images: ImageLoader  # image URLs in requests into bytes
    stores: StoreFactory  # key-value stores, shared by workers when Redis is configured
    files: LastingFiles | None  # lasting copies of returned files; None unless configured


class Backend:
    """A named upstream server. Subclasses implement list_models() and stream_chat()."""

    type: ClassVar[str] = "base"
    label: ClassVar[str] = "Backend"

    def __init__(self, settings: BackendSettings, shared: Settings, tools: BackendTools) -> None:
        self.name = settings.name
        self.url = settings.url
        self.hosts = HostPool(settings.urls or (settings.url,))
        # The operator's own upstream origins: links there are fetched even on private networks.
        self.own_origins = FetchPolicy.origins(settings.urls or (settings.url,))
        self.model_patterns = settings.models
        self.accepts_caller_keys = settings.allow_caller_keys
        self.timeout = (settings.connect_timeout, settings.read_timeout)
        self.images = tools.images
        self.transport = Transport(shared.worker_connections)
        self.session = self.transport.session

    @property
    def title(self) -> str:
        """Name the backend in messages, e.g. "Ollama backend 'gpu1'"."""
        return f"{self.label} backend '{self.name}'"

    def list_models(self) -> list[ModelInfo]:
        raise NotImplementedError

    def stream_chat(self, req: ChatRequest, ctx: CallContext) -> Generator[ChatDelta, None, None]:
        raise NotImplementedError

    def chat(self, req: ChatRequest, ctx: CallContext) -> ChatResult:
        """Run a whole turn; by default by collecting the stream."""
        return self._collect(self.stream_chat(req, ctx))

    def stream_text(self, req: TextRequest, ctx: CallContext) -> Generator[ChatDelta, None, None]:
        """Continue a prompt (legacy completions); backends that cannot say so with a 400."""
        raise UnsupportedError(
            f"{self.title} does not offer text completions; use /v1/chat/completions.",
            param="model",
        )

    def complete_text(self, req: TextRequest, ctx: CallContext) -> ChatResult:
        """Continue a prompt whole; by default by collecting the stream."""
        return self._collect(self.stream_text(req, ctx))

    def _collect(self, deltas: Iterator[ChatDelta]) -> ChatResult:
        return collect(deltas, self.title)

    def embed(self, req: EmbeddingRequest, ctx: CallContext) -> EmbeddingResult:
        """Embed texts; backends that cannot say so with a 400."""
        raise UnsupportedError(f"{self.title} does not offer embeddings.", param="model")

    def generate_images(self, req: ImageRequest, ctx: CallContext) -> list[GeneratedImage]:
        """Make images; backends that cannot say so with a 400."""
        raise UnsupportedError(f"{self.title} does not generate images.", param="model")

    def check(self) -> None:
        """Raise a GatewayError when the backend does not answer."""
        self.list_models()

    # --- HTTP plumbing --------------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        stream: bool = False,
        timeout: tuple[float, float] | None = None,
        keep_errors: bool = False,  # return 4xx/5xx answers as they are (pass-through)
        **extra: Any,  # headers, data, files, params: passed on to requests
    ) -> requests.Response:
        """Send one request; map transport failures and non-2xx answers to GatewayErrors.

        With several hosts, a request that could not reach one (nothing was sent to it, so
        retrying is safe) or that one refused as busy (503) goes to the next, after a short
        back-off. Nothing is retried once a host has the request: a read timeout is a 504.
        """
        absolute = path.startswith(("http://", "https://"))
        hosts = [""] if absolute else self.hosts.order()
        for attempt, host in enumerate(hosts):
            last = attempt == len(hosts) - 1
            if attempt:
                time.sleep(min(0.05 * 2**attempt, 1.0))
            try:
                resp = self.transport.send(
                    method,
                    host + path,
                    json=json,
                    stream=stream,
                    timeout=timeout or self.timeout,
                    extra=extra,
                )
            except (requests.ConnectTimeout, requests.ConnectionError) as e:
                if not absolute:
                    self.hosts.failed(host)
                logger.warning(
                    "{} host {} unreachable: {}", self.title, label(host or path), type(e).__name__
                )
                if not last:
                    continue
                if isinstance(e, requests.ConnectTimeout):
                    raise UpstreamTimeoutError(f"{self.title} did not answer in time.") from None
                raise UpstreamUnavailableError(f"{self.title} cannot be reached.") from None
            except requests.Timeout:
                raise UpstreamTimeoutError(f"{self.title} did not answer in time.") from None
            except requests.RequestException as e:
                raise UpstreamError(f"{self.title} request failed: {type(e).__name__}.") from None
            if not absolute and self.hosts.succeeded(host):
                logger.warning("{} host {} is back", self.title, label(host))
            if resp.status_code == 503 and not last and not keep_errors:
                resp.close()  # busy: the request was refused, so another host may take it
                continue
            break
        if resp.status_code >= 400 and not keep_errors:
            try:
                raise self._error_from_response(resp)
            finally:
                resp.close()
        if stream:
            cutoff.opened(resp)  # so a vanished client's stream can be cut (cutoff.py)
            # Sent: a stream may last minutes, and an agent's request body is often hundreds
            # of KiB that nothing reads again (docs/design.md §4.6).
            resp.request.body = None
        return resp

    def _iter_body(self, resp: requests.Response) -> Iterator[bytes]:
        """Yield body bytes as they arrive, mapping mid-stream transport failures."""
        try:
            if resp.raw.chunked:
                yield from resp.iter_content(chunk_size=None)
            else:
                while chunk := resp.raw.read1(65536):
                    yield chunk
        except requests.ConnectionError as e:
            if e.args and isinstance(e.args[0], ReadTimeoutError):
                raise UpstreamTimeoutError(f"{self.title} stopped sending in time.") from None
            raise UpstreamError(f"{self.title} dropped the connection mid-reply.") from None
        except (requests.RequestException, ReadTimeoutError, OSError) as e:
            if isinstance(e, ReadTimeoutError | TimeoutError):
                raise UpstreamTimeoutError(f"{self.title} stopped sending in time.") from None
            raise UpstreamError(f"{self.title} dropped the connection mid-reply.") from None

    def _release(self, resp: requests.Response, body: Iterator[bytes]) -> None:
        """After a stream's last event, read what is left of its body (the empty last chunk),
        waiting briefly, so its connection goes back to the pool: closing it instead costs the
        next stream a connect and a name lookup. Anything else there, or nothing in time, and
        the connection is closed as before (by the caller's resp.close())."""
        sock = getattr(getattr(resp.raw, "connection", None), "sock", None)
        if sock is None:  # the server said Connection: close
            return
        try:
            sock.settimeout(END_OF_BODY_WAIT)
            for _ in body:
                return  # more after the last event: not a body to trust with another request
        except (GatewayError, OSError):
            return

    def _download_image_b64(self, url: str, policy: FetchPolicy) -> str:
        """Fetch an image the backend handed out as base64 text, through the guarded fetcher.

        Only image/* answers within the image size cap are taken, redirects are not followed,
        and the policy says which hosts may be asked (services/common/outbound.py).
        """
        try:
            fetched = fetch_guarded(
                url,
                policy,
                max_bytes=self.images.max_bytes,
                timeout=self.timeout,
                accept=lambda kind: kind.startswith("image/"),
                total_seconds=max(self.timeout[0], 30.0),
            )
        except FetchRefusedError as e:
            logger.warning("{}: image {} not downloaded: {}", self.title, shown_url(url), e)
            raise UpstreamError(
                f"{self.title} handed out an image Relay does not download."
            ) from None
        return base64.b64encode(fetched.data).decode()

    def _json(self, resp: requests.Response) -> Any:
        try:
            return resp.json()
        except (ValueError, RecursionError):
            raise UpstreamError(f"{self.title} sent a reply that is not JSON.") from None

    def _error_from_response(self, resp: requests.Response) -> GatewayError:
        """Map a non-2xx answer to a GatewayError; backends refine this with their policy."""
        return UpstreamError(f"{self.title} failed with HTTP {resp.status_code}.")


def new_tool_call(index: int, call_id: str | None, name: str, arguments: str) -> ToolCall:
    """Build a ToolCall, making up an id when the backend sent none."""
    return ToolCall(id=call_id or new_id("call_"), name=name, arguments=arguments, index=index)
