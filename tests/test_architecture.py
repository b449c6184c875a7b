"""Keep the dependency graph honest (docs/design.md §2): services never reach up into HTTP
routing."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN_IN_SERVICES = {"blueprints", "app", "wsgi", "gevent", "flask"}


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_services_import_no_http_routing_or_gevent():
    for path in (ROOT / "services").rglob("*.py"):
        bad = imported_modules(path) & FORBIDDEN_IN_SERVICES
        if path.name == "ratelimit.py":  # flask-limiter's key function must read the request
            bad -= {"flask"}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_blueprints_do_not_call_upstreams_themselves():
    for path in (ROOT / "blueprints").rglob("*.py"):
        assert "requests" not in imported_modules(path), path


def test_only_config_reads_the_environment():
    sources = [
        *ROOT.glob("*.py"),
        *(ROOT / "services").rglob("*.py"),
        *(ROOT / "blueprints").rglob("*.py"),
    ]
    for path in sources:
        # gunicorn.conf.py hands the workers their shared metrics directory via the environment.
        if path.name in ("config.py", "gunicorn.conf.py"):
            continue
        assert "os.environ" not in path.read_text() and "getenv" not in path.read_text(), path


def test_only_wsgi_imports_gevent():
    for path in [*ROOT.glob("*.py"), *(ROOT / "blueprints").rglob("*.py")]:
        if path.name != "wsgi.py":
            assert "gevent" not in imported_modules(path), path
