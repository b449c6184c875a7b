"""One generation of the fake Dify: the blocking reply or the stream of events, with field
order following Dify's response converters, so raw bytes look like the real thing."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from werkzeug.wrappers import Response

from tests.fakes.dify_wire import (
    LLM_NODE,
    START_NODE,
    STOP_REASON,
    DifyApp,
    Task,
    dify_json,
    new_id,
    now,
)

if TYPE_CHECKING:
    from tests.fakes.dify import FakeDify


class Generation:
    """One generation: its ids, a snapshot of the app's script, and the reply it renders,
    whole (blocking) or as the stream of events."""

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
        self.task = Task(kind=kind, user=user)
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
                raise ClientGone
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
        except ClientGone:
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


class ClientGone(Exception):
    """The client closed the connection while the stream was waiting."""
