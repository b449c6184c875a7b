"""The backend registry: a backend type name maps to its adapter class."""

from __future__ import annotations

from config import Settings
from services.backends.base import Backend, BackendTools
from services.backends.dify.backend import DifyBackend
from services.backends.ollama import OllamaBackend
from services.backends.openai_compat import OpenAICompatBackend

BACKEND_TYPES: dict[str, type[Backend]] = {
    "ollama": OllamaBackend,
    "dify": DifyBackend,
    "openai": OpenAICompatBackend,
}


def build_backends(settings: Settings, tools: BackendTools) -> list[Backend]:
    """Create one adapter per configured backend, in configuration order."""
    return [BACKEND_TYPES[b.type](b, settings, tools) for b in settings.backends]
