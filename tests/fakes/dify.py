"""A fake Dify Service API that speaks the app API's wire format (docs/design.md §8).

Apps are registered per key with `FakeDify.add_app(key, mode)`; the returned `DifyApp` is the
script for that app and tests mutate it. Like real Dify, conversations and uploads are scoped to
the app and the `user` string, streams are `data: <json>` lines with the event name inside the
JSON, and errors raised before a stream starts are plain JSON with a non-2xx status.

Field order follows Dify's response converters (`*_generate_response_converter.py`,
`task_entities.py`), so raw bytes look like the real thing, not only the parsed JSON. This
module is the server and its routes; one generation's reply is tests/fakes/dify_reply.py and the
apps, records and wire helpers are tests/fakes/dify_wire.py.
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import threading
import time
from typing import Any

from werkzeug.wrappers import Request, Response

from tests.fakes.dify_reply import Generation
from tests.fakes.dify_wire import (
    MAX_UPLOAD,
    MODES,
    DifyApp,
    DifyError,
    Recorded,
    Run,
    Task,
    Upload,
    check_mode,
    dify_json,
    invalid,
    is_uuid,
    new_id,
    pydantic_error,
    split_tokens,
)
from tests.fakes.server import ServerThread


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
        self._tasks: dict[str, Task] = {}
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
        ctx = Generation(
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


if __name__ == "__main__":  # standalone, for trying a gateway by hand: python -m tests.fakes.dify
    import sys

    fake = FakeDify(port=int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    for m in MODES:
        fake.add_app(f"app-{m}", m, name=m)
    print(fake.url, flush=True)
    threading.Event().wait()
