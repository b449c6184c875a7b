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


def test_only_the_settings_environment_module_reads_the_environment():
    sources = [
        *ROOT.glob("*.py"),
        *(ROOT / "settings").rglob("*.py"),
        *(ROOT / "services").rglob("*.py"),
        *(ROOT / "blueprints").rglob("*.py"),
    ]
    for path in sources:
        # gunicorn.conf.py hands the workers their shared metrics directory via the environment.
        if path.relative_to(ROOT).as_posix() in ("settings/environment.py", "gunicorn.conf.py"):
            continue
        assert "os.environ" not in path.read_text() and "getenv" not in path.read_text(), path


def test_only_wsgi_imports_gevent():
    # relay_worker.py is the server itself: gevent's pywsgi (docs/design.md §3.2).
    for path in [*ROOT.glob("*.py"), *(ROOT / "blueprints").rglob("*.py")]:
        if path.name not in ("wsgi.py", "relay_worker.py"):
            assert "gevent" not in imported_modules(path), path


def test_no_async_views_or_hooks():
    # app.SyncFlask skips Flask's per-call check for coroutines (docs/design.md §3.2): an
    # `async def` view or hook would hand Flask a coroutine instead of running.
    sources = [*ROOT.glob("*.py"), *(ROOT / "blueprints").rglob("*.py")]
    sources += [*(ROOT / "services").rglob("*.py")]
    for path in sources:
        tree = ast.parse(path.read_text())
        assert not any(isinstance(n, ast.AsyncFunctionDef) for n in ast.walk(tree)), path


# The layers, lowest first (docs/design.md §2). A module may import its own layer or a lower
# one, never a higher one; the longest matching prefix names a module's layer.
LAYERS: dict[str, int] = {
    "settings": 0,
    "config": 0,
    "services.common": 0,
    # The core's vocabulary: what faces and backends speak.
    "services.core.types": 0,
    "services.core.errors": 0,
    "services.core.collector": 0,
    "services.core.cutoff": 0,
    "services.core.usage_estimate": 0,
    "services.faces": 1,
    "services.state": 1,
    "services.usage": 1,
    "services.access": 2,
    "services.backends": 3,
    # The core's pipeline: it calls the backends.
    "services.core": 4,
    "services.operations": 5,
    "blueprints": 6,
    "app": 7,
    "relay_keys": 7,
    "relay_usage": 7,
    "wsgi": 8,
    "relay_worker": 8,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def relay_modules() -> dict[str, Path]:
    paths = [*ROOT.glob("*.py"), *(ROOT / "settings").rglob("*.py")]
    paths += [*(ROOT / "services").rglob("*.py"), *(ROOT / "blueprints").rglob("*.py")]
    return {module_name(p): p for p in paths if p.name not in ("gunicorn.conf.py",)}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Relay modules a file imports, anywhere in it (function-level imports count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def layer(module: str) -> int:
    prefixes = [p for p in LAYERS if module == p or module.startswith(p + ".")]
    assert prefixes, f"{module} belongs to no layer: add it to LAYERS"
    return LAYERS[max(prefixes, key=len)]


def import_graph() -> dict[str, set[str]]:
    modules = relay_modules()
    packages = {m for m, p in modules.items() if p.name == "__init__.py"}
    graph = {}
    for module, path in modules.items():
        # Importing a submodule runs its package's __init__, which is not a dependency to judge.
        graph[module] = imports_of(path, set(modules)) - packages - {module}
    return graph


def test_every_module_imports_only_its_own_layer_or_lower():
    climbs = []
    for module, imported in import_graph().items():
        climbs += [f"{module} -> {i}" for i in sorted(imported) if layer(i) > layer(module)]
    assert not climbs, "imports that climb back up:\n" + "\n".join(climbs)


def test_no_import_circles():
    graph = import_graph()
    state: dict[str, int] = {}  # 1 visiting, 2 done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for nxt in sorted(graph[module]):
            if state.get(nxt) == 1:
                raise AssertionError("import circle: " + " -> ".join([*path, nxt]))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_services_modules_live_in_their_packages():
    loose = [p.name for p in (ROOT / "services").glob("*.py") if p.name != "__init__.py"]
    assert not loose, f"modules outside a services package: {loose}"
