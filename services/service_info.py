"""Describe this gateway for its service page: version, endpoints, backends, models."""

from __future__ import annotations

from typing import Any

from config import VERSION
from services.errors import GatewayError
from services.gateway import Gateway

ENDPOINTS = (
    ("POST", "/v1/chat/completions", "Chat Completions, streaming or not"),
    ("POST", "/v1/responses", "Responses API, with previous_response_id"),
    ("GET", "/v1/responses/{id}", "A stored response"),
    ("POST", "/v1/images/generations", "Image generation"),
    ("GET", "/v1/models", "Models of every backend"),
    ("GET", "/health", "Liveness, no backend calls"),
    ("GET", "/ready", "Readiness: every backend answers"),
    ("GET", "/metrics", "Prometheus metrics (allowed addresses only)"),
)


def describe(gw: Gateway) -> dict[str, Any]:
    """Ask every backend for its state and models; never include addresses or keys."""
    health = gw.router.check_all()
    backends = []
    for backend in gw.router.backends:
        try:
            listed = backend.list_models()
            models = sorted(m.id for m in listed if gw.router.resolve_or_none(m.id) is backend)
        except GatewayError:
            models = []
        backends.append({"name": backend.name, **health[backend.name], "models": models})
    return {
        "name": "Relay",
        "description": "OpenAI-compatible gateway for Ollama, Dify and OpenAI-compatible servers",
        "version": VERSION,
        "status": "ok" if all(b["status"] == "ok" for b in backends) else "degraded",
        "endpoints": [{"method": m, "path": p, "description": d} for m, p, d in ENDPOINTS],
        "backends": backends,
    }
