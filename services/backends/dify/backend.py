"""Dify backend: each configured Dify app is a model; every app type, always streamed upstream.

Requests follow docs/design.md §8.1 (chat-messages, completion-messages, workflows/run),
events are translated by dify_events, conversation memory lives in dify_conversations. Dify is
always called in streaming mode, also for non-streaming clients: agent apps refuse blocking
mode, and long blocking calls get cut by common deployments (docs/design.md §8.5).
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

import requests
from cachetools import TTLCache
from loguru import logger

from config import BackendSettings, DifyAppSettings, Settings
from services.backends.base import Backend, BackendTools
from services.backends.dify.conversations import (
    CONVERSATION_MEMORY,
    history_key,
    rememberable,
    transcript,
)
from services.backends.dify.events import CHAT_FAMILY, DifyStream
from services.backends.dify.files import DifyFileHosts, file_keeper
from services.backends.dify.images import image_urls, workflow_inputs
from services.common.outbound import FetchPolicy
from services.common.sse import iter_sse_json
from services.core.errors import (
    AuthenticationError,
    GatewayError,
    InvalidRequestError,
    ModelNotFoundError,
    NotFoundError,
    RateLimitError,
    UnsupportedError,
    UpstreamError,
)
from services.core.types import (
    REPLACE_SEPARATOR,
    CallContext,
    ChatDelta,
    ChatRequest,
    GeneratedImage,
    ImageRequest,
    Message,
    ModelInfo,
    TextRequest,
)

IMAGE_TYPES = ("image/png", "image/jpeg", "image/jpg", "image/gif", "image/webp")
STOP_PATHS = {"completion": "/completion-messages/{}/stop", "workflow": "/workflows/tasks/{}/stop"}


class ConversationNotFoundError(NotFoundError):
    code = "conversation_not_found"


class _AppKeyRefusedError(UpstreamError):
    """Dify refused the app key; whose fault that is depends on who supplied the key."""


@dataclass(frozen=True, slots=True)
class _Call:
    """One request's plan: which app, as which user, what to send and what to remember."""

    app: DifyAppSettings
    caller_key: bool  # the key came from the caller (X-Dify-Api-Key), not the operator
    mode: str
    user: str
    scope: str  # where this user's conversations of this app live, for history digests
    body: dict[str, Any]
    remembered: bool  # the conversation id came from Relay's memory, not from the caller


class DifyBackend(Backend):
    type = "dify"
    label = "Dify"

    def __init__(self, settings: BackendSettings, shared: Settings, tools: BackendTools) -> None:
        super().__init__(settings, shared, tools)
        parts = urlsplit(self.url)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.apps = {app.name: app for app in settings.apps}
        # history digest -> Dify conversation id, shared by workers when Redis is configured
        self.store = tools.stores.make(
            f"dify:{self.name}:conversations", shared.conversation_ttl, CONVERSATION_MEMORY
        )
        self.created = int(time.time())
        self._modes: TTLCache[str, str] = TTLCache(maxsize=1024, ttl=3600)
        self._modes_lock = threading.Lock()
        self.lasting = tools.files  # None unless lasting files are on
        # Where Relay may fetch this backend's files from: Dify itself and its FILES_URL.
        self.file_hosts = DifyFileHosts(
            own=self.own_origins, files=FetchPolicy.origins([settings.files_url])
        )

    def list_models(self) -> list[ModelInfo]:
        return [ModelInfo(id=name, created=self.created, owned_by=self.name) for name in self.apps]

    def check(self) -> None:
        for app in self.apps.values():
            self._info(app)
        if not self.apps:  # caller keys only: any answer from Dify shows it is up
            with contextlib.suppress(_AppKeyRefusedError):
                self._send("GET", "/info", timeout=(self.timeout[0], 5.0))

    def stream_text(self, req: TextRequest, ctx: CallContext) -> Generator[ChatDelta, None, None]:
        """Run a text-generator (completion) app on a legacy completions prompt.

        The prompt becomes the app's query; sampling fields, suffix and stop are the app's own
        business (its model settings), so they are not sent.
        """
        app, caller_key = self._app_for(req.model, ctx)
        mode = app.mode or self._mode(app, caller_key)
        if mode != "completion":
            raise UnsupportedError(
                f"{self._app_title(app)} is a {mode} app; /v1/completions serves Dify "
                "text-generator apps only, use /v1/chat/completions.",
                param="model",
            )
        prompt = Message(role="user", content=req.prompt)
        chat = ChatRequest(model=req.model, messages=(prompt,), user=req.user, extra=req.extra)
        yield from self.stream_chat(chat, ctx)

    def stream_chat(self, req: ChatRequest, ctx: CallContext) -> Generator[ChatDelta, None, None]:
        call = self._plan(req, ctx)
        resp = self._start(call, req)
        stream = DifyStream(
            call.mode,
            self._app_title(call.app),
            self.origin,
            call.app.answer_output,
            keep_file=self._file_keeper(ctx),
        )
        announced = False  # the conversation id went out on a delta
        whole: list[str] = []  # the reply as a non-streaming client sees it
        shown: list[str] = []  # the reply as a streaming client sees it (replacements appended)
        try:
            for event in self._events(resp):
                deltas = stream.feed(event)
                for delta in deltas:
                    if delta.replace:
                        whole.clear()
                        shown.append(REPLACE_SEPARATOR if shown else "")
                    whole.append(delta.content)
                    shown.append(delta.content)
                if deltas and stream.conversation_id and not announced:
                    # The first delta carries the header: the core hands it up before the
                    # reply's first byte (docs/design.md §4.4).
                    announced = True
                    headers = {"X-Dify-Conversation-Id": stream.conversation_id}
                    deltas = [replace(deltas[0], headers=headers), *deltas[1:]]
                if stream.finished:  # before the last yield: the consumer may stop after it
                    replies = {"".join(whole), "".join(shown)}
                    self._remember(call, req, stream.conversation_id, replies)
                yield from deltas
                if stream.finished:
                    return
            raise UpstreamError(
                f"{self._app_title(call.app)} ended the stream before it was complete."
            )
        except ValueError:
            raise UpstreamError(f"{self._app_title(call.app)} sent a malformed event.") from None
        finally:
            if not stream.finished and stream.task_id:
                self._stop(call, stream.task_id)  # the client left or the stream broke
            resp.close()

    def generate_images(self, req: ImageRequest, ctx: CallContext) -> list[GeneratedImage]:
        """Run a workflow app with the prompt and settings as inputs; return its image files."""
        app, caller_key = self._app_for(req.model, ctx)
        mode = app.mode or self._mode(app, caller_key)
        if mode != "workflow":
            raise UnsupportedError(
                f"{self._app_title(app)} is a {mode} app; only workflow apps make images.",
                param="model",
            )
        user = f"{ctx.key_name}:{req.user}" if req.user else ctx.key_name
        inputs = {**app.inputs, **workflow_inputs(req, app.query_input or "query")}
        body = {"inputs": inputs, "response_mode": "streaming", "user": user}
        with self._call(app, caller_key, "POST", "/workflows/run", json=body, stream=True) as r:
            try:
                urls = image_urls(self._events(r), self.origin, self._app_title(app))
            except ValueError:
                raise UpstreamError(f"{self._app_title(app)} sent a malformed event.") from None
        if req.response_format == "b64_json":
            policy = self.file_hosts.policy
            return [GeneratedImage(b64_json=self._download_image_b64(u, policy)) for u in urls]
        keep = self._file_keeper(ctx)
        return [GeneratedImage(url=keep(url, "") if keep else url) for url in urls]

    # --- planning the call ----------------------------------------------------------------

    def _plan(self, req: ChatRequest, ctx: CallContext) -> _Call:
        app, caller_key = self._app_for(req.model, ctx)
        mode = app.mode or self._mode(app, caller_key)
        user = f"{ctx.key_name}:{req.user}" if req.user else ctx.key_name
        scope = "/".join((self.name, app.name, _digest(app.api_key), user))
        last = max((i for i, m in enumerate(req.messages) if m.role == "user"), default=None)
        if last is None:
            raise InvalidRequestError("Dify apps need a user message to answer.", param="messages")
        newest = req.messages[last].text()
        earlier = [m for m in req.messages[:last] if m.role not in ("system", "developer")]
        explicit = ctx.conversation_id or req.extra.get("conversation_id")
        conversation, remembered = "", False
        if mode in CHAT_FAMILY and isinstance(explicit, str) and explicit:
            conversation = explicit
        elif mode in CHAT_FAMILY and app.memory == "conversation" and earlier:
            conversation = self.store.get(history_key(scope, req.messages[:last])) or ""
            remembered = bool(conversation)
        # With no conversation to continue, the whole transcript goes in, so no context is lost.
        query = newest if conversation or not earlier else transcript(req.messages[: last + 1])
        # `inputs` was checked to be an object when the request was parsed (extension_fields).
        inputs = {**app.inputs, **(req.extra.get("inputs") or {})}
        body: dict[str, Any] = {"inputs": inputs, "response_mode": "streaming", "user": user}
        if mode in CHAT_FAMILY:
            body.update(query=query, conversation_id=conversation, auto_generate_name=False)
        else:
            inputs.setdefault(app.query_input or "query", query)
            if mode == "completion":
                body["query"] = query
        files = self._files(req, last, app, caller_key, user)
        if files:
            body["files"] = files
        return _Call(app, caller_key, mode, user, scope, body, remembered)

    def _app_for(self, model: str, ctx: CallContext) -> tuple[DifyAppSettings, bool]:
        if ctx.upstream_key and self.accepts_caller_keys:
            base = self.apps.get(model) or DifyAppSettings(name=model, api_key="")
            return replace(base, api_key=ctx.upstream_key), True
        app = self.apps.get(model)
        if app is None and len(self.apps) == 1:
            app = next(iter(self.apps.values()))  # the only app answers every model name
        if app is None:
            raise ModelNotFoundError(
                f"The model `{model}` is not an app of {self.title}.", param="model"
            )
        return app, False

    def _files(
        self, req: ChatRequest, last: int, app: DifyAppSettings, caller_key: bool, user: str
    ) -> list[dict[str, str]]:
        files = []
        for j, url in enumerate(req.messages[last].image_urls()):
            param = f"messages[{last}].content"
            if url.startswith("data:"):
                upload_id = self._upload(app, caller_key, user, url, param)
                files.append(
                    {"type": "image", "transfer_method": "local_file", "upload_file_id": upload_id}
                )
            else:
                files.append({"type": "image", "transfer_method": "remote_url", "url": url})
            logger.debug(
                "{} file {} sent as {}", self._app_title(app), j, files[-1]["transfer_method"]
            )
        return files

    def _upload(
        self, app: DifyAppSettings, caller_key: bool, user: str, url: str, param: str
    ) -> str:
        data, media_type = self.images.decode_data_url(url, param)
        if media_type not in IMAGE_TYPES:
            raise InvalidRequestError(
                f"Images for Dify must be one of {', '.join(IMAGE_TYPES)}; got {media_type}.",
                param=param,
            )
        name = "image." + media_type.split("/")[1]
        with self._call(
            app,
            caller_key,
            "POST",
            "/files/upload",
            data={"user": user},
            files={"file": (name, data, media_type)},
        ) as resp:
            body = self._json(resp)
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            raise UpstreamError(f"{self._app_title(app)} answered an upload without an id.")
        return str(body["id"])

    # --- talking to Dify --------------------------------------------------------------------

    def _start(self, call: _Call, req: ChatRequest) -> requests.Response:
        path = {"completion": "/completion-messages", "workflow": "/workflows/run"}.get(
            call.mode, "/chat-messages"
        )
        logger.debug(
            "{} <- POST {} mode={} conversation={} query_chars={} files={}",
            self._app_title(call.app),
            path,
            call.mode,
            call.body.get("conversation_id") or "new",
            len(str(call.body.get("query", ""))),
            len(call.body.get("files", ())),
        )
        try:
            return self._call(call.app, call.caller_key, "POST", path, json=call.body, stream=True)
        except ConversationNotFoundError:
            if not call.remembered:
                raise
            # Dify lost the conversation we remembered (deleted, expired): start a new one
            # that carries the whole transcript.
            logger.info(
                "{}: remembered conversation is gone; starting a new one", self._app_title(call.app)
            )
            last = max(i for i, m in enumerate(req.messages) if m.role == "user")
            body = {
                **call.body,
                "conversation_id": "",
                "query": transcript(req.messages[: last + 1]),
            }
            return self._call(call.app, call.caller_key, "POST", path, json=body, stream=True)

    def _events(self, resp: requests.Response) -> Generator[dict[str, Any], None, None]:
        for event in iter_sse_json(self._iter_body(resp)):
            if isinstance(event, dict):
                logger.debug("{} -> event {}", self.title, event.get("event"))
                yield event

    def _remember(
        self, call: _Call, req: ChatRequest, conversation: str | None, replies: set[str]
    ) -> None:
        if call.mode not in CHAT_FAMILY or call.app.memory != "conversation":
            return
        if not conversation or not rememberable(conversation):
            return
        for reply in replies:
            history = (*req.messages, _assistant(reply))
            self.store.put(history_key(call.scope, history), conversation)

    def _stop(self, call: _Call, task_id: str) -> None:
        path = STOP_PATHS.get(call.mode, "/chat-messages/{}/stop").format(task_id)
        try:
            with self._call(
                call.app,
                call.caller_key,
                "POST",
                path,
                json={"user": call.user},
                timeout=(self.timeout[0], 5.0),
            ):
                logger.info(
                    "{}: stopped task {} after the client left", self._app_title(call.app), task_id
                )
        except GatewayError as e:
            logger.warning(
                "{}: could not stop task {}: {}", self._app_title(call.app), task_id, e.message
            )

    def _info(self, app: DifyAppSettings, caller_key: bool = False) -> dict[str, Any]:
        with self._call(app, caller_key, "GET", "/info", timeout=(self.timeout[0], 10.0)) as r:
            body = self._json(r)
        return body if isinstance(body, dict) else {}

    def _mode(self, app: DifyAppSettings, caller_key: bool) -> str:
        cache_key = _digest(app.api_key)
        with self._modes_lock:
            mode = self._modes.get(cache_key)
        if mode is None:
            mode = self._info(app, caller_key).get("mode")
            if mode not in (*CHAT_FAMILY, "completion", "workflow"):
                raise UpstreamError(f"{self._app_title(app)} has an unknown app type {mode!r}.")
            with self._modes_lock:
                self._modes[cache_key] = mode
        return str(mode)

    def _call(
        self, app: DifyAppSettings, caller_key: bool, method: str, path: str, **kw: Any
    ) -> requests.Response:
        headers = {"Authorization": f"Bearer {app.api_key}"}
        try:
            return self._send(method, path, headers=headers, **kw)
        except _AppKeyRefusedError as e:
            if caller_key:
                raise AuthenticationError(
                    "Dify refused the app key sent in X-Dify-Api-Key.", code="invalid_dify_api_key"
                ) from None
            raise UpstreamError(
                f"{self._app_title(app)} refused the gateway's app key: {e.message}"
            ) from None

    def _error_from_response(self, resp: requests.Response) -> GatewayError:
        try:
            body = resp.json()
            code, message = str(body.get("code", "")), str(body.get("message", ""))
        except (ValueError, AttributeError):
            code, message = "", ""
        status = resp.status_code
        detail = f"{message} ({code})" if code else message or f"HTTP {status}"
        if status in (401, 403):
            return _AppKeyRefusedError(detail)
        if status == 404 and "Conversation" in message:
            return ConversationNotFoundError(f"{self.title}: {message}", param="conversation_id")
        if status in (400, 413, 415):
            return InvalidRequestError(
                f"{self.title} rejected the request: {detail}", code=code or None
            )
        if status == 429:
            # too_many_requests is the app's concurrency ceiling (retry); rate_limit_error is
            # a plan quota that will not clear soon (reference §5).
            retry = 5 if code != "rate_limit_error" else 60
            return RateLimitError(
                f"{self.title} is rate limited: {detail}",
                retry_after=retry,
                code="rate_limit_exceeded",
            )
        return UpstreamError(f"{self.title} failed (HTTP {status}): {detail}")

    def _file_keeper(self, ctx: CallContext) -> Callable[[str, str], str] | None:
        return file_keeper(self.lasting, ctx, self.title, self.timeout[0], self.file_hosts)

    def _app_title(self, app: DifyAppSettings) -> str:
        return f"Dify app '{app.name}' of backend '{self.name}'"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()[:16]


def _assistant(text: str) -> Message:
    return Message(role="assistant", content=text)
