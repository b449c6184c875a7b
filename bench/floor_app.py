"""The stack's floor: the least an app on Relay's fixed stack can do for a chat request.

Flask under the same gunicorn gevent worker, parsing the JSON body, calling the upstream with
urllib3 (one pooled connection per concurrent request) and rendering an OpenAI reply — no keys,
limits, logging, metrics, ledger or checks. With FLOOR_CACHED=1 it answers from a stored reply
instead (the floor of a cache hit). bench/compare.py runs it beside Relay: what Relay adds over
it is Relay's own work; what it adds over the upstream is the stack's.
"""

from __future__ import annotations

import json
import os
import time

import urllib3
from flask import Flask, Response, request

app = Flask(__name__)
upstream = os.environ.get("FLOOR_UPSTREAM", "http://127.0.0.1:11434")
pool = urllib3.PoolManager(maxsize=4000)
stored: bytes | None = None


@app.post("/v1/chat/completions")
def chat() -> Response:
    global stored
    body = request.get_json()
    if stored is not None and os.environ.get("FLOOR_CACHED") == "1":
        return Response(stored, mimetype="application/json")
    sent = {"model": body["model"], "messages": body["messages"], "stream": False}
    reply = pool.request(
        "POST",
        upstream + "/api/chat",
        body=json.dumps(sent).encode(),
        headers={"Content-Type": "application/json"},
    )
    answer = json.loads(reply.data)
    out = json.dumps(
        {
            "id": "chatcmpl-floor",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [
                {"index": 0, "message": answer["message"], "finish_reason": "stop"},
            ],
        }
    ).encode()
    stored = out
    return Response(out, mimetype="application/json")


@app.get("/health")
def health() -> Response:
    return Response(b"ok")
