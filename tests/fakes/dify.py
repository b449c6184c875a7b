"""A fake Dify Service API that speaks the app API's wire format (docs/design.md §8).

Apps are registered per key with `FakeDify.add_app(key, mode)`; the returned `DifyApp` is the
script for that app and tests mutate it. Like real Dify, conversations and uploads are scoped to
the app and the `user` string, streams are `data: <json>` lines with the event name inside the
JSON, and errors raised before a stream starts are plain JSON with a non-2xx status.

Field order follows Dify's response converters (`*_generate_response_converter.py`,
`task_entities.py`), so raw bytes look like the real thing, not only the parsed JSON.
"""

from __future__ import annotations

import json
import re
import secrets
import select
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from werkzeug.wrappers import Request, Response

from tests.fakes.server import ServerThread

CHAT_FAMILY = ("chat", "agent-chat", "advanced-chat", "agent")
MODES = (*CHAT_FAMILY, "completion", "workflow")
MAX_UPLOAD = 10 * 1024 * 1024
LLM_NODE = "1711528915811"  # Dify node ids are millisecond timestamps
START_NODE = "1711528914102"
STOP_REASON = "Stopped by user."


def dify_json(obj: Any) -> bytes:
    """Encode as Dify's orjson does: compact, UTF-8, nothing escaped."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def new_id() -> str:
    return str(uuid.uuid4())


def now() -> int:
    return int(time.time())


def split_tokens(text: str, parts: int = 3) -> list[str]:
    """Cut text at spaces into about `parts` deltas whose concatenation is the text."""
    words = [w for w in re.split(r"(?= )", text) if w]
    if not words:
        return []
    size = -(-len(words) // parts)
    return ["".join(words[i : i + size]) for i in range(0, len(words), size)]


def is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


class DifyError(Exception):
    """Dify's HTTP error envelope, raised anywhere before a stream starts."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def invalid(message: str) -> DifyError:
    return DifyError(400, "invalid_param", message)


def pydantic_error(model: str, loc: str, msg: str, kind: str, value: Any) -> DifyError:
    """Mimic str(pydantic.ValidationError), which Dify passes through as invalid_param."""
    shown = repr(value) if not isinstance(value, dict) else json.dumps(value)[:60]
    return invalid(
        f"1 validation error for {model}\n{loc}\n  {msg} [type={kind}, input_value={shown}, "
        f"input_type={type(value).__name__}]\n    "
        f"For further information visit https://errors.pydantic.dev/2.11/v/{kind}"
    )


@dataclass
class DifyApp:
    """How one app (one API key) answers. Tests change the fields between or during calls."""

    key: str
    mode: str
    name: str = "App"
    answer: list[str] | None = None  # answer deltas; None: "Answer <turn> to: <query>"
    pace: float = 0.0  # seconds between answer events
    pings: bool = True  # an `event: ping` line before the first answer event
    agent_thought: bool = True  # agent apps: an agent_thought whose thought repeats the answer
    replace_with: str | None = None  # message_replace (output moderation) after the answer
    files: list[dict[str, Any]] = field(default_factory=list)  # assistant files, relative URLs
    error_midstream: dict[str, Any] | None = None  # {"status", "code", "message"} after answer
    error_before: tuple[int, dict[str, Any]] | None = None  # (HTTP status, JSON body)
    usage: dict[str, Any] = field(
        default_factory=lambda: {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
    )
    workflow_outputs: dict[str, Any] | None = None  # default {"answer": <full answer>}
    workflow_text_chunks: bool = True  # workflow: stream text_chunk events
    workflow_status: str = "succeeded"  # or "failed"
    workflow_error: str = "Node LLM run failed: [openai] Server Unavailable Error, Bad Gateway"
    reasoning: list[str] = field(default_factory=list)  # advanced-chat/workflow reasoning_chunk
    inputs_required: list[str] = field(default_factory=list)  # text-input variables
    description: str = ""
    workflow_id: str = field(default_factory=new_id)


def check_mode(app: DifyApp, kind: str) -> None:
    """The controllers' app-mode guard; note /completion-messages answers app_unavailable."""
    if kind == "chat" and app.mode not in CHAT_FAMILY:
        raise DifyError(
            400, "not_chat_app", "Please check if your Chat app mode matches the right API route."
        )
    if kind == "completion" and app.mode != "completion":
        raise DifyError(
            400, "app_unavailable", "App unavailable, please check your app configurations."
        )
    if kind == "workflow" and app.mode != "workflow":
        raise DifyError(
            400, "not_workflow_app", "Please check if your app mode matches the right API route."
        )


@dataclass
class Recorded:
    method: str
    path: str
    json: Any  # the parsed JSON body, or None
    headers: dict[str, str]
    form: dict[str, str]  # multipart/urlencoded form fields (not the file parts)
    at: float

    @property
    def body(self) -> Any:
        """The JSON body, under the name the fake Ollama uses."""
        return self.json


@dataclass
class Upload:
    name: str
    mime_type: str
    data: bytes
    user: str
    id: str = field(default_factory=new_id)
    key: str = ""  # the app the file was uploaded through
    created_at: int = field(default_factory=now)

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def extension(self) -> str:
        return self.name.rsplit(".", 1)[1].lower() if "." in self.name else ""


@dataclass
class Run:
    """One accepted generation request, so tests can check what reached the app."""

    key: str
    mode: str
    user: str
    query: str
    inputs: dict[str, Any]
    files: list[dict[str, Any]]  # the file mappings Dify kept (invalid ones silently dropped)
    uploads: list[Upload]  # the uploads that the local_file mappings resolved to
    conversation_id: str  # "" for completion and workflow apps
    response_mode: str
    task_id: str
    message_id: str  # the workflow run id for workflow apps
    at: float


@dataclass
class _Task:
    """A streaming generation that a stop call can end."""

    kind: str  # "chat", "completion" or "workflow"
    user: str
    stopped: threading.Event = field(default_factory=threading.Event)


class FakeDify:
    def __init__(self, port: int = 0) -> None:
        self.apps: dict[str, DifyApp] = {}
        self.requests: list[Recorded] = []
        self.runs: list[Run] = []
        self.stops: list[tuple[str, str, str]] = []
        self.uploads: dict[str, Upload] = {}
        self.disconnects: list[tuple[str, float]] = []
        self.completed: list[str] = []  # app names of streams that reached their terminal event
        self.serve_files = True
        self._conversations: dict[tuple[str, str], dict[str, list[list[str]]]] = {}
        self._end_users: dict[tuple[str, str], str] = {}
        self._tasks: dict[str, _Task] = {}
        self._lock = threading.Lock()
        self._server = ServerThread(self.wsgi, port=port)
        self.url = self._server.url

    # --- test controls --------------------------------------------------------------------

    def add_app(self, key: str, mode: str, name: str = "App") -> DifyApp:
        """Register an app behind API key `key` (e.g. "app-abc") and return its script."""
        if mode not in MODES:
            raise ValueError(f"unknown Dify app mode {mode!r}")
        with self._lock:
            self.apps[key] = app = DifyApp(key=key, mode=mode, name=name)
        return app

    def reset(self) -> None:
        with self._lock:
            self.apps.clear()
            self.requests.clear()
            self.runs.clear()
            self.stops.clear()
            self.uploads.clear()
            self.disconnects.clear()
            self.completed.clear()
            self._conversations.clear()
            self._end_users.clear()
            for task in self._tasks.values():
                task.stopped.set()  # let streams still running wind down
            self._tasks.clear()
            self.serve_files = True

    def close(self) -> None:
        with self._lock:
            for task in self._tasks.values():
                task.stopped.set()
        self._server.close()

    def conversations(self, key: str, user: str) -> dict[str, list[tuple[str, str]]]:
        """Conversation id -> [(query, answer), ...] of app `key` for `user`."""
        with self._lock:
            convs = self._conversations.get((key, user), {})
            return {cid: [(q, a) for q, a in turns] for cid, turns in convs.items()}

    def last(self, path: str = "/v1/chat-messages") -> Recorded:
        return [r for r in self.requests if r.path == path][-1]

    def last_run(self) -> Run:
        return self.runs[-1]

    # --- the server -----------------------------------------------------------------------

    def wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        body: Any = None
        form: dict[str, str] = {}
        if request.mimetype in ("multipart/form-data", "application/x-www-form-urlencoded"):
            form = {k: v for k, v in request.form.items()}
        elif request.method in ("POST", "PUT", "PATCH", "DELETE"):
            raw = request.get_data()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw
        with self._lock:
            self.requests.append(
                Recorded(
                    request.method,
                    request.path,
                    body,
                    dict(request.headers),
                    form,
                    time.monotonic(),
                )
            )
        try:
            response = self.route(request, body, environ.get("werkzeug.socket"))
        except DifyError as e:
            response = self.error(e.status, e.code, e.message)
        finally:
            request.close()  # uploaded parts are spooled temp files; ResourceWarning otherwise
        return response(environ, start_response)

    @staticmethod
    def json(obj: Any, status: int = 200) -> Response:
        return Response(dify_json(obj), status=status, content_type="application/json")

    def error(self, status: int, code: str, message: str) -> Response:
        """Dify's envelope (libs/external_api.py): code, message, status."""
        response = self.json({"code": code, "message": message, "status": status}, status)
        if status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="api"'
        return response

    def route(self, request: Request, body: Any, sock: socket.socket | None) -> Response:
        path, method = request.path, request.method
        if path.startswith("/files/"):
            return self.serve_file(path, method)
        if not path.startswith("/v1/"):
            return self.not_found()
        sub = path[3:]
        routes: list[tuple[str, str]] = [
            ("GET", "/info"),
            ("GET", "/parameters"),
            ("GET", "/meta"),
            ("POST", "/chat-messages"),
            ("POST", "/completion-messages"),
            ("POST", "/workflows/run"),
            ("POST", "/files/upload"),
        ]
        stop = re.fullmatch(
            r"/(chat-messages|completion-messages|workflows/tasks)/([^/]+)/stop", sub
        )
        preview = re.fullmatch(r"/files/([^/]+)/preview", sub)
        if (method, sub) not in routes and not (stop or preview):
            if any(sub == p for _, p in routes):
                return self.error(
                    405, "method_not_allowed", "The method is not allowed for the requested URL."
                )
            return self.not_found()
        app = self.authenticate(request)
        if sub == "/info":
            return self.json(
                {
                    "name": app.name,
                    "description": app.description,
                    "tags": [],
                    "mode": app.mode,
                    "author_name": "Relay tests",
                }
            )
        if sub == "/parameters":
            return self.json(self.parameters(app))
        if sub == "/meta":
            return self.json({"tool_icons": {}})
        if sub == "/files/upload":
            return self.upload(app, request)
        if preview:
            return self.preview(app, preview.group(1), request.args.get("user", "DEFAULT-USER"))
        if stop:
            return self.stop(app, stop.group(1), stop.group(2), body)
        return self.generate(app, sub, body, sock)

    def not_found(self) -> Response:
        return self.error(
            404,
            "not_found",
            "The requested URL was not found on the server. If you entered the URL manually "
            "please check your spelling and try again.",
        )

    def authenticate(self, request: Request) -> DifyApp:
        """Like service_api/wraps.py validate_app_token."""
        header = request.headers.get("Authorization")
        if header is None or " " not in header:
            raise DifyError(
                401, "unauthorized", "Authorization header must be provided and start with 'Bearer'"
            )
        scheme, token = header.split(None, 1)
        if scheme.lower() != "bearer":
            raise DifyError(
                401, "unauthorized", "Authorization header must be provided and start with 'Bearer'"
            )
        app = self.apps.get(token.strip())
        if app is None:
            raise DifyError(401, "unauthorized", "Access token is invalid")
        return app

    def end_user(self, key: str, user: str) -> str:
        """The EndUser id Dify creates for (app, user) on first use."""
        with self._lock:
            return self._end_users.setdefault((key, user), new_id())

    @staticmethod
    def parameters(app: DifyApp) -> dict[str, Any]:
        form = [
            {
                "text-input": {
                    "label": var,
                    "variable": var,
                    "required": True,
                    "max_length": 256,
                    "default": "",
                }
            }
            for var in app.inputs_required
        ]
        methods = ["remote_url", "local_file"]
        return {
            "opening_statement": "",
            "suggested_questions": [],
            "suggested_questions_after_answer": {"enabled": False},
            "speech_to_text": {"enabled": False},
            "text_to_speech": {"enabled": False, "voice": "", "language": ""},
            "retriever_resource": {"enabled": False},
            "annotation_reply": {"enabled": False},
            "more_like_this": {"enabled": False},
            "user_input_form": form,
            "sensitive_word_avoidance": {"enabled": False, "type": "", "configs": []},
            "file_upload": {
                "image": {
                    "enabled": True,
                    "number_limits": 3,
                    "detail": "high",
                    "transfer_methods": methods,
                },
                "enabled": True,
                "allowed_file_types": ["image"],
                "allowed_file_extensions": [".png", ".jpg", ".jpeg", ".webp", ".gif"],
                "allowed_file_upload_methods": methods,
                "number_limits": 3,
            },
            "system_parameters": {
                "image_file_size_limit": 10,
                "video_file_size_limit": 100,
                "audio_file_size_limit": 50,
                "file_size_limit": 15,
                "workflow_file_upload_limit": 10,
            },
        }

    # --- files ----------------------------------------------------------------------------

    def serve_file(self, path: str, method: str) -> Response:
        """The signed URLs Dify hands out: tool files and upload previews (FILES_URL empty)."""
        if method not in ("GET", "HEAD") or not self.serve_files:
            return self.not_found()
        tool = re.fullmatch(r"/files/tools/([^/]+)", path)
        if tool:
            name = tool.group(1)
            return Response(b"\x89PNG\r\n\x1a\n" + name.encode(), content_type="image/png")
        upload = re.fullmatch(r"/files/([^/]+)/file-preview", path)
        if upload and upload.group(1) in self.uploads:
            up = self.uploads[upload.group(1)]
            return Response(up.data, content_type=up.mime_type)
        return self.not_found()

    def preview(self, app: DifyApp, file_id: str, user: str) -> Response:
        up = self.uploads.get(file_id)
        if up is None or up.key != app.key or up.user != user:
            raise DifyError(404, "not_found", "File not found")
        return Response(up.data, content_type=up.mime_type)

    def upload(self, app: DifyApp, request: Request) -> Response:
        """POST /v1/files/upload (controllers/service_api/app/file.py)."""
        if "file" not in request.files:
            raise DifyError(400, "no_file_uploaded", "Please upload your file.")
        if len(request.files) > 1:
            raise DifyError(400, "too_many_files", "Only one file is allowed.")
        part = request.files["file"]
        if not part.mimetype:
            raise DifyError(415, "unsupported_file_type", "File type not allowed.")
        if not part.filename:
            raise DifyError(
                400, "filename_not_exists_error", "The specified filename does not exist."
            )
        if "/" in part.filename or "\\" in part.filename:
            raise invalid("Filename contains invalid characters")
        data = part.read()
        if len(data) > MAX_UPLOAD:
            raise DifyError(413, "file_too_large", "")
        user = request.form.get("user") or "DEFAULT-USER"
        up = Upload(name=part.filename, mime_type=part.mimetype, data=data, user=user, key=app.key)
        with self._lock:
            self.uploads[up.id] = up
        sign = (
            f"timestamp={up.created_at}&nonce={secrets.token_hex(16)}&sign={secrets.token_hex(22)}"
        )
        return self.json(
            {
                "id": up.id,
                "name": up.name,
                "size": up.size,
                "extension": up.extension,
                "mime_type": up.mime_type,
                "created_by": self.end_user(app.key, user),
                "created_at": up.created_at,
                "preview_url": None,
                "source_url": f"/files/{up.id}/file-preview?{sign}",
                "reference": None,
            },
            201,
        )

    def check_files(
        self, app: DifyApp, user: str, files: Any
    ) -> tuple[list[dict[str, Any]], list[Upload]]:
        """Like factories/file_factory: drop malformed mappings, refuse unknown uploads."""
        if files is None:
            return [], []
        if not isinstance(files, list):
            raise pydantic_error(
                "ChatRequestPayload", "files", "Input should be a valid list", "list_type", files
            )
        kept: list[dict[str, Any]] = []
        resolved: list[Upload] = []
        for mapping in files:
            if not isinstance(mapping, dict) or not mapping.get("transfer_method"):
                continue
            method = mapping["transfer_method"]
            if method == "remote_url":
                if not (mapping.get("url") or mapping.get("remote_url")):
                    continue
            elif method == "local_file":
                up = self.uploads.get(str(mapping.get("upload_file_id") or ""))
                if up is None or up.key != app.key or up.user != user:
                    raise invalid("Invalid upload file")
                resolved.append(up)
            elif method not in ("tool_file", "datasource_file"):
                raise invalid(f"'{method}' is not a valid FileTransferMethod")
            kept.append(mapping)
        return kept, resolved

    # --- stop -----------------------------------------------------------------------------

    def stop(self, app: DifyApp, route: str, task_id: str, body: Any) -> Response:
        kind = {"chat-messages": "chat", "completion-messages": "completion"}.get(route, "workflow")
        user = body.get("user") if isinstance(body, dict) else None
        if not user or not isinstance(user, str):
            raise invalid("Arg user must be provided.")
        check_mode(app, kind)
        with self._lock:
            self.stops.append((kind, task_id, user))
            task = self._tasks.get(task_id)
        # Dify ignores a chat/completion stop from another user; the workflow stop ignores user.
        if task is not None and task.kind == kind and (kind == "workflow" or task.user == user):
            task.stopped.set()
        return self.json({"result": "success"})

    # --- generation -----------------------------------------------------------------------

    def generate(self, app: DifyApp, sub: str, body: Any, sock: socket.socket | None) -> Response:
        kind = {"/chat-messages": "chat", "/completion-messages": "completion"}.get(sub, "workflow")
        model = {
            "chat": "ChatRequestPayload",
            "completion": "CompletionRequestPayload",
            "workflow": "WorkflowRunPayload",
        }[kind]
        if not isinstance(body, dict):
            raise DifyError(
                415,
                "unsupported_media_type",
                "Did not attempt to load JSON data because the request Content-Type was not "
                "'application/json'.",
            )
        user = body.get("user")
        if not user or not isinstance(user, str):
            raise invalid("Arg user must be provided.")
        check_mode(app, kind)
        if "inputs" not in body:
            raise pydantic_error(model, "inputs", "Field required", "missing", body)
        inputs = body["inputs"]
        if not isinstance(inputs, dict):
            raise pydantic_error(
                model, "inputs", "Input should be a valid dictionary", "dict_type", inputs
            )
        query = body.get("query", "")
        if kind != "workflow" and not isinstance(query, str):
            raise pydantic_error(
                model, "query", "Input should be a valid string", "string_type", query
            )
        conversation_id = body.get("conversation_id") or ""
        if kind == "chat" and not isinstance(conversation_id, str):
            raise invalid("conversation_id must be a valid UUID")
        if kind == "chat" and conversation_id and not is_uuid(conversation_id):
            raise invalid("conversation_id must be a valid UUID")
        response_mode = body.get("response_mode") or "blocking"
        if response_mode not in ("blocking", "streaming"):
            raise pydantic_error(
                model,
                "response_mode",
                "Input should be 'blocking' or 'streaming'",
                "literal_error",
                response_mode,
            )
        streaming = response_mode == "streaming"
        if app.mode == "agent-chat" and not streaming:
            raise invalid("Agent Chat App does not support blocking mode")
        if app.mode == "agent" and not streaming:
            raise DifyError(400, "bad_request", "Agent App only supports streaming response mode.")
        query = query.replace("\x00", "") if isinstance(query, str) else ""
        if kind == "chat" and not query:
            raise invalid("query is required")
        with self._lock:
            convs = self._conversations.setdefault((app.key, user), {})
            if kind == "chat" and conversation_id and conversation_id not in convs:
                raise DifyError(404, "not_found", "Conversation Not Exists.")
        for var in app.inputs_required:
            value = inputs.get(var)
            if value is None or value == "":
                raise invalid(f"{var} is required in input form")
        files, uploads = self.check_files(app, user, body.get("files"))
        if app.error_before is not None:
            status, err = app.error_before
            return self.json(err, status)

        if kind == "completion":
            text = query or str(inputs.get("query") or "")
        elif kind == "workflow":
            text = str(inputs.get("query") or "")
        else:
            text = query
        turn: list[str] = [text, ""]
        with self._lock:
            if kind == "chat":
                if not conversation_id:
                    conversation_id = new_id()
                    convs[conversation_id] = []
                convs[conversation_id].append(turn)
                number = len(convs[conversation_id])
            else:
                conversation_id = ""
                number = 1
        tokens = (
            list(app.answer)
            if app.answer is not None
            else split_tokens(f"Answer {number} to: {text}")
        )
        ctx = _Context(
            fake=self,
            app=app,
            user=user,
            end_user=self.end_user(app.key, user),
            inputs=inputs,
            query=text,
            conversation_id=conversation_id,
            tokens=tokens,
            turn=turn,
            sock=sock,
        )
        with self._lock:
            self.runs.append(
                Run(
                    key=app.key,
                    mode=app.mode,
                    user=user,
                    query=text,
                    inputs=inputs,
                    files=files,
                    uploads=uploads,
                    conversation_id=conversation_id,
                    response_mode=response_mode,
                    task_id=ctx.task_id,
                    message_id=ctx.run_id if app.mode == "workflow" else ctx.message_id,
                    at=time.monotonic(),
                )
            )
        if not streaming:
            return ctx.blocking()
        with self._lock:
            self._tasks[ctx.task_id] = ctx.task
        return Response(ctx.stream(), content_type="text/event-stream; charset=utf-8")


class _Context:
    """One generation: its ids, script snapshot and the events it renders."""

    def __init__(
        self,
        fake: FakeDify,
        app: DifyApp,
        user: str,
        end_user: str,
        inputs: dict[str, Any],
        query: str,
        conversation_id: str,
        tokens: list[str],
        turn: list[str],
        sock: socket.socket | None,
    ) -> None:
        self.fake = fake
        self.app = app
        self.mode = app.mode
        self.user = user
        self.end_user = end_user
        self.inputs = inputs
        self.query = query
        self.conversation_id = conversation_id
        self.tokens = tokens
        self.turn = turn
        self.sock = sock
        self.task_id = new_id()
        self.message_id = new_id()
        self.run_id = new_id()
        self.created_at = now()
        self.started = time.monotonic()
        # Snapshot the script, so a test changing it mid-stream does not tear an answer.
        self.pace = app.pace
        self.pings = app.pings
        self.replace_with = app.replace_with
        self.files = [dict(f) for f in app.files]
        self.file_ids = [new_id() for _ in self.files]
        self.error_midstream = dict(app.error_midstream) if app.error_midstream else None
        self.usage = app.usage
        self.reasoning = list(app.reasoning)
        self.workflow_status = app.workflow_status
        self.workflow_error = app.workflow_error
        self.workflow_outputs = app.workflow_outputs
        self.workflow_text_chunks = app.workflow_text_chunks
        self.agent_thought = app.agent_thought
        kind = {"completion": "completion", "workflow": "workflow"}.get(self.mode, "chat")
        self.task = _Task(kind=kind, user=user)
        self.sent: list[str] = []

    # --- shared pieces --------------------------------------------------------------------

    @property
    def final_answer(self) -> str:
        if self.replace_with is not None:
            return self.replace_with
        return "".join(self.tokens)

    def save(self, answer: str) -> None:
        with self.fake._lock:
            self.turn[1] = answer

    def full_usage(self) -> dict[str, Any]:
        """LLMUsage as Dify dumps it: prices are decimal strings, latency in seconds."""
        usage: dict[str, Any] = {
            "prompt_tokens": 0,
            "prompt_unit_price": "0.0",
            "prompt_price_unit": "0.0",
            "prompt_price": "0.0",
            "completion_tokens": 0,
            "completion_unit_price": "0.0",
            "completion_price_unit": "0.0",
            "completion_price": "0.0",
            "total_tokens": 0,
            "total_price": "0.0",
            "currency": "USD",
            "latency": round(time.monotonic() - self.started, 3),
        }
        usage.update(self.usage)
        return usage

    def metadata(self) -> dict[str, Any]:
        return {"annotation_reply": None, "retriever_resources": [], "usage": self.full_usage()}

    def file_url(self, f: dict[str, Any]) -> str:
        return str(f.get("url", ""))

    def end_files(self) -> list[dict[str, Any]]:
        """message_end.files (message_file_utils.prepare_file_dict for tool files)."""
        out = []
        for f, fid in zip(self.files, self.file_ids, strict=True):
            url = self.file_url(f)
            part = url.split("/")[-1].split("?")[0]
            ext = "." + part.rsplit(".", 1)[1] if "." in part else ".bin"
            out.append(
                {
                    "related_id": fid,
                    "extension": ext,
                    "filename": part,
                    "size": 0,
                    "mime_type": "application/octet-stream",
                    "transfer_method": "tool_file",
                    "type": f.get("type", "image"),
                    "url": url,
                    "upload_file_id": fid,
                    "remote_url": "",
                }
            )
        return out

    def file_objects(self) -> list[dict[str, Any]]:
        """Workflow file values as graphon's File serialises them."""
        out = []
        for f, fid in zip(self.files, self.file_ids, strict=True):
            url = self.file_url(f)
            name = f.get("filename") or url.split("/")[-1].split("?")[0]
            out.append(
                {
                    "dify_model_identity": "__dify__file__",
                    "id": None,
                    "tenant_id": "d4b5c6e7-0000-4000-8000-000000000001",
                    "type": f.get("type", "image"),
                    "transfer_method": "tool_file",
                    "remote_url": None,
                    "related_id": fid,
                    "filename": name,
                    "extension": "." + name.rsplit(".", 1)[1] if "." in name else "",
                    "mime_type": f.get("mime_type", "application/octet-stream"),
                    "size": len(b"\x89PNG\r\n\x1a\n" + name.encode()),
                    "url": url,
                }
            )
        return out

    def outputs(self) -> dict[str, Any]:
        if self.workflow_outputs is not None:
            return self.workflow_outputs
        out: dict[str, Any] = {"answer": self.final_answer}
        if self.files:
            out["files"] = self.file_objects()
        return out

    # --- blocking -------------------------------------------------------------------------

    def blocking(self) -> Response:
        """The JSON bodies of reference §3."""
        if self.pace:
            time.sleep(self.pace * len(self.tokens))
        if self.error_midstream is not None:
            # The blocking pipeline re-raises the stream's error as a plain JSON error.
            self.save("".join(self.tokens))
            err = self.error_midstream
            return self.fake.error(int(err.get("status", 400)), err["code"], err["message"])
        if self.mode == "workflow":
            failed = self.workflow_status == "failed"
            answer = "".join(self.tokens) if failed else self.final_answer
            self.save(answer)
            return self.fake.json(
                {
                    "task_id": self.task_id,
                    "workflow_run_id": self.run_id,
                    "data": {
                        "id": self.run_id,
                        "workflow_id": self.app.workflow_id,
                        "status": self.workflow_status,
                        "outputs": {} if failed else self.outputs(),
                        "error": self.workflow_error if failed else None,
                        "elapsed_time": round(time.monotonic() - self.started, 6),
                        "total_tokens": self.usage.get("total_tokens", 0),
                        "total_steps": 3,
                        "created_at": self.created_at,
                        "finished_at": now(),
                    },
                }
            )
        if self.mode == "advanced-chat" and self.workflow_status == "failed":
            self.save("".join(self.tokens))
            return self.fake.error(400, "invalid_param", f"Run failed: {self.workflow_error}")
        self.save(self.final_answer)
        body: dict[str, Any] = {
            "event": "message",
            "task_id": self.task_id,
            "id": self.message_id,
            "message_id": self.message_id,
        }
        if self.mode != "completion":
            body["conversation_id"] = self.conversation_id
        body.update(
            {
                "mode": self.mode,
                "answer": self.final_answer,
                "metadata": self.metadata(),
                "created_at": self.created_at,
            }
        )
        return self.fake.json(body)

    # --- streaming ------------------------------------------------------------------------

    def envelope(self, event: str) -> dict[str, Any]:
        """The converter's outer dict, before the stream response's own to_dict() fields."""
        if self.mode == "workflow":
            return {"event": event, "workflow_run_id": self.run_id}
        out: dict[str, Any] = {"event": event}
        if self.mode != "completion":
            out["conversation_id"] = self.conversation_id
        out["message_id"] = self.message_id
        out["created_at"] = self.created_at
        return out

    def event(self, event: str, **fields: Any) -> bytes:
        out = self.envelope(event)
        out["task_id"] = self.task_id
        out.update(fields)
        self.sent.append(event)
        return b"data: " + dify_json(out) + b"\n\n"

    def error_event(self, status: int, code: str, message: str) -> bytes:
        out = self.envelope("error")
        out.update({"code": code, "status": status, "message": message})
        self.sent.append("error")
        return b"data: " + dify_json(out) + b"\n\n"

    def client_gone(self) -> bool:
        """True when the client closed its end: readable with nothing to read means EOF."""
        if self.sock is None:
            return False
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
            if not readable:
                return False
            return self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except (OSError, ValueError):
            return True

    def wait(self, seconds: float) -> None:
        """Sleep between events, waking early for a stop call; a gone client ends the stream."""
        deadline = time.monotonic() + seconds
        while True:
            if self.client_gone():
                raise _ClientGone
            left = deadline - time.monotonic()
            if left <= 0 or self.task.stopped.is_set():
                return
            self.task.stopped.wait(min(left, 0.02))

    @property
    def stopped(self) -> bool:
        return self.task.stopped.is_set()

    def stream(self) -> Iterator[bytes]:
        finished = False
        try:
            for chunk in self.events():
                if self.client_gone():
                    return
                yield chunk  # werkzeug asks for the next chunk only once this one is written
            finished = True
        except _ClientGone:
            return
        finally:
            with self.fake._lock:
                self.fake._tasks.pop(self.task_id, None)
                if finished:
                    self.fake.completed.append(self.app.name)
                else:
                    self.fake.disconnects.append((self.app.name, time.monotonic()))

    def events(self) -> Iterator[bytes]:
        if self.mode == "workflow":
            yield from self.workflow_events()
        elif self.mode == "advanced-chat":
            yield from self.chatflow_events()
        else:
            yield from self.message_events()

    def answer_tokens(self, event: str, extra: dict[str, Any]) -> Iterator[bytes]:
        """Answer deltas, paced, stopping early on a stop call; records the partial answer."""
        for i, token in enumerate(self.tokens):
            if self.stopped:
                return
            if i == 0 and self.pings:
                self.sent.append("ping")
                yield b"event: ping\n\n"
            if event == "text_chunk":
                yield self.event(event, data={"text": token, **extra})
            else:
                yield self.event(event, id=self.message_id, answer=token, **extra)
            self.save(self.turn[1] + token)
            if self.pace:
                self.wait(self.pace)
        if not self.tokens and self.pings and not self.stopped:
            self.sent.append("ping")
            yield b"event: ping\n\n"

    def midstream_error(self) -> Iterator[bytes]:
        assert self.error_midstream is not None
        err = self.error_midstream
        yield self.error_event(int(err.get("status", 400)), err["code"], err["message"])

    def message_end(self) -> bytes:
        return self.event(
            "message_end", id=self.message_id, metadata=self.metadata(), files=self.end_files()
        )

    def message_events(self) -> Iterator[bytes]:
        """chat, agent-chat, agent (New Agent) and completion (easy-UI pipeline)."""
        agent = self.mode in ("agent-chat", "agent")
        if agent and self.agent_thought:
            yield self.event(
                "agent_thought",
                id=new_id(),
                position=1,
                thought="".join(self.tokens),
                observation="",
                tool="",
                tool_labels={},
                tool_input="",
                message_files=[],
            )
        if agent:
            yield from self.answer_tokens("agent_message", {})
        else:
            yield from self.answer_tokens("message", {"from_variable_selector": None})
        if self.stopped:
            yield self.message_end()
            return
        if self.error_midstream is not None:
            yield from self.midstream_error()
            return
        if self.mode == "agent":
            yield self.event(
                "message",
                id=self.message_id,
                answer="".join(self.tokens),
                from_variable_selector=None,
            )
        if self.replace_with is not None:
            yield self.event(
                "message_replace", answer=self.replace_with, reason="output_moderation"
            )
            self.save(self.replace_with)
        for f, fid in zip(self.files, self.file_ids, strict=True):
            yield self.event(
                "message_file",
                id=fid,
                type=f.get("type", "image"),
                belongs_to="assistant",
                url=self.file_url(f),
            )
        yield self.message_end()

    def workflow_started(self) -> bytes:
        sys_inputs = {
            **self.inputs,
            "sys.user_id": self.end_user,
            "sys.app_id": "a1b2c3d4-0000-4000-8000-000000000002",
            "sys.workflow_id": self.app.workflow_id,
            "sys.workflow_run_id": self.run_id,
            "sys.files": [],
        }
        if self.mode == "advanced-chat":
            sys_inputs.update(
                {
                    "sys.query": self.query,
                    "sys.conversation_id": self.conversation_id,
                    "sys.dialogue_count": len(
                        self.fake.conversations(self.app.key, self.user).get(
                            self.conversation_id, []
                        )
                    ),
                }
            )
        return self.event(
            "workflow_started",
            workflow_run_id=self.run_id,
            data={
                "id": self.run_id,
                "workflow_id": self.app.workflow_id,
                "inputs": sys_inputs,
                "created_at": self.created_at,
                "reason": "initial",
            },
        )

    def node_data(self, node_exec_id: str) -> dict[str, Any]:
        return {
            "id": node_exec_id,
            "node_id": LLM_NODE,
            "node_type": "llm",
            "title": "LLM",
            "index": 2,
            "predecessor_node_id": START_NODE,
        }

    def node_started(self, node_exec_id: str) -> bytes:
        data = self.node_data(node_exec_id)
        data.update(
            {
                "inputs": None,
                "inputs_truncated": False,
                "created_at": self.created_at,
                "extras": {},
                "iteration_id": None,
                "loop_id": None,
                "agent_strategy": None,
            }
        )
        return self.event("node_started", workflow_run_id=self.run_id, data=data)

    def node_finished(self, node_exec_id: str, failed: bool) -> bytes:
        usage = self.full_usage()
        data = self.node_data(node_exec_id)
        data.update(
            {
                "inputs": None,
                "inputs_truncated": False,
                "process_data": None,
                "process_data_truncated": False,
                "outputs": None if failed else {"text": "".join(self.tokens), "usage": usage},
                "outputs_truncated": False,
                "status": "failed" if failed else "succeeded",
                "error": self.workflow_error.removeprefix("Node LLM run failed: ")
                if failed
                else None,
                "elapsed_time": round(time.monotonic() - self.started, 6),
                "execution_metadata": {
                    "total_tokens": usage["total_tokens"],
                    "total_price": usage["total_price"],
                    "currency": usage["currency"],
                },
                "created_at": self.created_at,
                "finished_at": now(),
                "files": [],
                "iteration_id": None,
                "loop_id": None,
            }
        )
        return self.event("node_finished", workflow_run_id=self.run_id, data=data)

    def workflow_finished(self, status: str, error: str | None) -> bytes:
        ok = status == "succeeded"
        return self.event(
            "workflow_finished",
            workflow_run_id=self.run_id,
            data={
                "id": self.run_id,
                "workflow_id": self.app.workflow_id,
                "status": status,
                "outputs": self.outputs() if ok else {},
                "error": error,
                "elapsed_time": round(time.monotonic() - self.started, 6),
                "total_tokens": self.usage.get("total_tokens", 0),
                "total_steps": 3,
                "created_by": {"id": self.end_user, "user": self.user},
                "created_at": self.created_at,
                "finished_at": now(),
                "exceptions_count": 0,
                "files": self.file_objects() if ok else [],
            },
        )

    def reasoning_events(self) -> Iterator[bytes]:
        extra = {"message_id": self.message_id} if self.mode == "advanced-chat" else {}
        for i, chunk in enumerate([*self.reasoning, ""] if self.reasoning else []):
            if self.stopped:
                return
            yield self.event(
                "reasoning_chunk",
                workflow_run_id=self.run_id,
                data={
                    **extra,
                    "node_id": LLM_NODE,
                    "reasoning": chunk,
                    "is_final": i == len(self.reasoning),
                },
            )
            if self.pace and chunk:
                self.wait(self.pace)

    def chatflow_events(self) -> Iterator[bytes]:
        """advanced-chat: workflow events around the answer; message_end, then workflow_finished."""
        node = new_id()
        yield self.workflow_started()
        yield self.node_started(node)
        yield from self.reasoning_events()
        yield from self.answer_tokens("message", {"from_variable_selector": [LLM_NODE, "text"]})
        if self.stopped:
            yield self.workflow_finished("stopped", STOP_REASON)
            yield self.message_end()
            return
        if self.error_midstream is not None:
            yield from self.midstream_error()
            return
        if self.workflow_status == "failed":
            yield self.node_finished(node, failed=True)
            yield self.workflow_finished("failed", self.workflow_error)
            yield self.error_event(400, "invalid_param", f"Run failed: {self.workflow_error}")
            return
        yield self.node_finished(node, failed=False)
        if self.replace_with is not None:
            yield self.event(
                "message_replace", answer=self.replace_with, reason="output_moderation"
            )
            self.save(self.replace_with)
        yield self.message_end()
        yield self.workflow_finished("succeeded", None)

    def workflow_events(self) -> Iterator[bytes]:
        """workflow: text_chunk deltas (if streamed) and the result in workflow_finished."""
        node = new_id()
        yield self.workflow_started()
        yield self.node_started(node)
        yield from self.reasoning_events()
        if self.workflow_text_chunks:
            yield from self.answer_tokens(
                "text_chunk", {"from_variable_selector": [LLM_NODE, "text"]}
            )
        else:
            if self.pings:
                self.sent.append("ping")
                yield b"event: ping\n\n"
            self.save("".join(self.tokens))
            if self.pace:
                self.wait(self.pace * len(self.tokens))
        if self.stopped:
            yield self.workflow_finished("stopped", STOP_REASON)
            return
        if self.error_midstream is not None:
            yield from self.midstream_error()
            return
        if self.workflow_status == "failed":
            yield self.node_finished(node, failed=True)
            yield self.workflow_finished("failed", self.workflow_error)
            return
        yield self.node_finished(node, failed=False)
        if self.replace_with is not None:
            yield self.event("text_replace", data={"text": self.replace_with})
            self.save(self.replace_with)
        yield self.workflow_finished("succeeded", None)


class _ClientGone(Exception):
    """The client closed the connection while the stream was waiting."""


if __name__ == "__main__":  # standalone, for trying a gateway by hand: python -m tests.fakes.dify
    import sys

    fake = FakeDify(port=int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    for m in MODES:
        fake.add_app(f"app-{m}", m, name=m)
    print(fake.url, flush=True)
    threading.Event().wait()
