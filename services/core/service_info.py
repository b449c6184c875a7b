"""Describe this gateway for its service page: version, endpoints, backends, models."""

from __future__ import annotations

from typing import Any

from config import VERSION
from services.access.keys import ApiKey
from services.core.backend_status import BackendState

# Every route the app serves (tests/security/test_exposure_home.py compares this with the
# app's URL map). The pass-through line is shown only when a backend takes unknown /v1 paths.
ENDPOINTS = (
    ("POST", "/v1/chat/completions", "Chat Completions, streaming or not"),
    ("POST", "/api/chat/completions", "The same, at the path of the former Express service"),
    ("POST", "/v1/completions", "Legacy text completions, streaming or not"),
    ("POST", "/v1/embeddings", "Embeddings"),
    ("POST", "/v1/responses", "Responses API, with previous_response_id"),
    ("GET", "/v1/responses/{id}", "A stored response"),
    ("DELETE", "/v1/responses/{id}", "Delete a stored response"),
    ("POST", "/v1/images/generations", "Image generation"),
    ("POST", "/v1/messages", "Anthropic Messages API, streaming or not (Claude Code)"),
    ("POST", "/v1/messages/count_tokens", "Anthropic token count, estimated locally"),
    ("GET", "/api/hello", "Claude Code's connectivity probe (no key)"),
    ("GET", "/v1/models", "Models the key may use"),
    ("GET", "/v1/models/{model}", "One model"),
    ("POST", "/api/chat", "Ollama's native chat, NDJSON streaming by default"),
    ("POST", "/api/generate", "Ollama's native generate"),
    ("POST", "/api/embed", "Ollama's native embeddings"),
    ("POST", "/api/embeddings", "Ollama's legacy embeddings"),
    ("GET", "/api/tags", "Ollama's model list: the models the key may use"),
    ("POST", "/api/show", "Ollama's model details"),
    ("GET", "/api/ps", "Models loaded on the Ollama backends"),
    ("GET", "/api/version", "The Ollama version"),
    ("POST", "/api/pull", "Ollama model management: admin keys only"),
    ("POST", "/api/push", "Ollama model management: admin keys only"),
    ("POST", "/api/create", "Ollama model management: admin keys only"),
    ("POST", "/api/copy", "Ollama model management: admin keys only"),
    ("DELETE", "/api/delete", "Ollama model management: admin keys only"),
    ("POST", "/api/blobs/{digest}", "Ollama model management: admin keys only"),
    ("GET", "/files/{name}", "Files kept from replies (when lasting files are on)"),
    ("GET", "/openapi.json", "This API's OpenAPI description"),
    ("GET", "/health", "Liveness, no backend calls"),
    ("GET", "/ready", "Readiness: every backend answers"),
    ("GET", "/metrics", "Prometheus metrics (allowed addresses or the admin token)"),
    ("GET", "/v1/usage", "The key's own usage, summed"),
    ("GET", "/v1/usage/records", "The key's own usage records"),
    ("GET", "/admin/usage", "Every key's usage (allowed addresses or the admin token)"),
    ("GET", "/admin/usage/records", "Usage records (allowed addresses or the admin token)"),
    ("GET", "/admin/budgets", "Every key's budgets and use (allowed addresses or the admin token)"),
    ("GET", "/admin", "The operator dashboard (its data: allowed addresses or the admin token)"),
    ("GET", "/admin/dashboard.json", "The dashboard's data (allowed addresses or the admin token)"),
    ("GET", "/admin/static/{filename}", "The dashboard's script, styles and chart library"),
    ("GET", "/", "This page"),
)
PASSTHROUGH = ("ANY", "/v1/{path}", "Other OpenAI paths, passed to the pass-through backend")


def describe(
    states: tuple[BackendState, ...],
    *,
    viewer: ApiKey | None,
    admin: bool,
    passthrough: bool,
    hosts: dict[str, list[dict[str, str]]],
) -> dict[str, Any]:
    """The service page's content for this viewer.

    Anyone sees backend names and states; models only a valid key (those it may use) or the
    admin token (all); host addresses only the admin token. Keys are never shown.
    """
    backends: list[dict[str, Any]] = []
    for state in states:
        backend: dict[str, Any] = {"name": state.name, **state.health()}
        if admin:
            backend["models"] = list(state.models)
            backend["hosts"] = hosts.get(state.name, [])
        elif viewer is not None:
            backend["models"] = [m for m in state.models if viewer.allows(m)]
        backends.append(backend)
    endpoints = ENDPOINTS + ((PASSTHROUGH,) if passthrough else ())
    return {
        "name": "Relay",
        "description": "OpenAI-compatible gateway for Ollama, Dify and OpenAI-compatible servers",
        "version": VERSION,
        "status": "ok" if all(s.status == "ok" for s in states) else "degraded",
        "endpoints": [{"method": m, "path": p, "description": d} for m, p, d in endpoints],
        "backends": backends,
    }
