"""Pure translation of Dify stream events into core deltas. No I/O.

Which events carry the answer, and how each app type ends its stream, follow
docs/design.md §8.2 (agent text in agent_message, the New Agent's final full `message`,
message_replace, chatflow's message_end before workflow_finished, workflow answers that live
only in `outputs`) and §8.4 (relative file URLs).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

from services.core.errors import RateLimitError, UpstreamError
from services.core.types import ChatDelta, Usage

CHAT_FAMILY = ("chat", "agent-chat", "advanced-chat", "agent")
# Workflow output names that usually hold the answer, tried when none is configured.
ANSWER_KEYS = ("answer", "text", "result", "output")


@dataclass(slots=True)
class DifyStream:
    """What one Dify stream has shown so far; `feed` turns each event into deltas."""

    mode: str
    title: str  # names the backend and app in errors
    origin: str  # scheme://host of the Dify server, for relative file URLs
    answer_output: str | None = None
    task_id: str | None = None
    conversation_id: str | None = None
    finished: bool = False
    agent_text: str = ""  # what agent_message events said, to spot the final full `message`
    has_text: bool = False
    files: set[str] = field(default_factory=set)
    # (absolute URL, declared media type) -> the URL to show, e.g. a lasting copy (dify_files)
    keep_file: Callable[[str, str], str] | None = None

    def feed(self, event: dict[str, Any]) -> list[ChatDelta]:
        """Translate one event; raise UpstreamError for Dify's error event or a failed run."""
        self.task_id = self.task_id or event.get("task_id")
        self.conversation_id = self.conversation_id or event.get("conversation_id") or None
        kind = event.get("event")
        data: dict[str, Any] = event["data"] if isinstance(event.get("data"), dict) else {}
        if kind == "agent_message":
            self.agent_text += event.get("answer") or ""
            return self._text(event.get("answer"))
        if kind == "message":
            answer = event.get("answer") or ""
            if self.agent_text:
                # The New Agent repeats its whole answer in one `message` at the end (§4.3).
                rest = answer[len(self.agent_text) :] if answer.startswith(self.agent_text) else ""
                self.agent_text += rest
                return self._text(rest)
            return self._text(answer)
        if kind == "text_chunk":
            return self._text(data.get("text"))
        if kind == "message_replace":
            self.has_text = True
            return [ChatDelta(content=event.get("answer") or "", replace=True)]
        if kind == "reasoning_chunk":
            return (
                [ChatDelta(reasoning=data.get("reasoning") or "")] if data.get("reasoning") else []
            )
        if kind == "message_file":
            if event.get("belongs_to") == "user":
                return []
            return self._file_lines([event])
        if kind == "message_end":
            usage = (event.get("metadata") or {}).get("usage") or {}
            deltas = self._file_lines(event.get("files") or [])
            return [
                *deltas,
                self._finish(Usage(_int(usage, "prompt_tokens"), _int(usage, "completion_tokens"))),
            ]
        if kind == "workflow_finished":
            return self._workflow_finished(data)
        if kind == "workflow_paused":  # a Human Input node: the run waits, the stream ends
            return [self._finish(Usage())]
        if kind == "error":
            message = event.get("message") or "unknown error"
            if event.get("status") == 429:
                raise RateLimitError(f"{self.title} is rate limited: {message}", retry_after=5)
            raise UpstreamError(f"{self.title} failed: {message}", code=event.get("code"))
        return []  # ping, agent_thought, node_* and events newer than this code

    def _workflow_finished(self, data: dict[str, Any]) -> list[ChatDelta]:
        status = data.get("status")
        if status == "failed":
            raise UpstreamError(f"{self.title}: the workflow failed: {data.get('error')}")
        if self.mode != "workflow":
            return []  # chatflow: message_end already ended the reply
        deltas = [] if self.has_text else self._text(self._answer(data.get("outputs") or {}))
        files = [f for f in _files_in(data.get("outputs")) if isinstance(f, dict)]
        files += [f for f in data.get("files") or [] if isinstance(f, dict)]
        deltas += self._file_lines(files)
        return [*deltas, self._finish(Usage(0, _int(data, "total_tokens")))]

    def _answer(self, outputs: dict[str, Any]) -> str:
        if self.answer_output is not None:
            value = outputs.get(self.answer_output, "")
        elif len(outputs) == 1:
            value = next(iter(outputs.values()))
        else:
            key = next((k for k in ANSWER_KEYS if k in outputs), None)
            value = outputs[key] if key else outputs
        if _is_file(value) or (isinstance(value, list) and value and all(map(_is_file, value))):
            return ""  # a file answer is shown as a link line instead
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)

    def _text(self, text: Any) -> list[ChatDelta]:
        if not isinstance(text, str) or not text:
            return []
        self.has_text = True
        return [ChatDelta(content=text)]

    def _file_lines(self, files: list[dict[str, Any]]) -> list[ChatDelta]:
        # OpenAI has no assistant file part: files become Markdown lines with absolute URLs.
        out = []
        for f in files:
            url = f.get("url") or f.get("remote_url")
            if not isinstance(url, str) or not url:
                continue
            url = urljoin(self.origin + "/", url)
            if url in self.files:
                continue
            self.files.add(url)
            name = f.get("filename") or url.rsplit("/", 1)[-1].split("?")[0] or "file"
            is_image = f.get("type") == "image" or str(f.get("mime_type", "")).startswith("image/")
            if self.keep_file is not None:
                url = self.keep_file(url, str(f.get("mime_type") or ""))
            line = f"![{name}]({url})" if is_image else f"[{name}]({url})"
            out.extend(self._text(("\n\n" if self.has_text else "") + line))
        return out

    def _finish(self, usage: Usage) -> ChatDelta:
        self.finished = True
        return ChatDelta(finish_reason="stop", usage=usage)


def _int(mapping: dict[str, Any], key: str) -> int:
    value = mapping.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _is_file(value: Any) -> bool:
    return isinstance(value, dict) and value.get("dify_model_identity") == "__dify__file__"


def _files_in(outputs: Any) -> list[Any]:
    """Collect the file objects among a workflow's outputs (single files or lists of them)."""
    found: list[Any] = []
    for value in (outputs or {}).values() if isinstance(outputs, dict) else []:
        if _is_file(value):
            found.append(value)
        elif isinstance(value, list):
            found.extend(v for v in value if _is_file(v))
    return found
