"""The fake Dify's data: apps and their scripts, what it records, and wire helpers (ids, times,
Dify's error bodies). The server is tests/fakes/dify.py, one reply tests/fakes/dify_reply.py."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

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
class Task:
    """A streaming generation that a stop call can end."""

    kind: str  # "chat", "completion" or "workflow"
    user: str
    stopped: threading.Event = field(default_factory=threading.Event)
