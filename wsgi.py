"""WSGI entry point: patch with gevent if nobody has, then build the app."""

from gevent import monkey

if not monkey.is_module_patched("socket"):
    monkey.patch_all()

from app import create_app  # noqa: E402 - must come after patching

app = create_app()
