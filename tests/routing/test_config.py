"""The routing table is checked at start-up: each mistake stops Relay with one line naming it."""

from __future__ import annotations

import pytest

from tests.conftest import write_config
from tests.test_startup_config import run_gunicorn

BACKENDS = """
[backends.local]
type = "ollama"
url = "http://127.0.0.1:1"
models = ["llama*"]
"""


@pytest.mark.parametrize(
    ("table", "named"),
    [
        (
            '[models."x"]\ntarget = "qwen3:8b"',
            "models.\"x\".targets[0].model 'qwen3:8b' matches no",
        ),
        ('[models."x"]\ntarget = "llama3"\nbackend = "gpu"', "backend 'gpu' is not a configured"),
        ('[models."x"]\nbackend = "local"', "needs exactly one of target"),
        ('[models."x"]\ntargets = []', "targets must be a list of 1 to 16"),
        (
            '[models."x"]\ntargets = [{model = "llama3", weight = 0}]',
            "weight must be between 1 and 1000",
        ),
        ('[models."x"]\ntargets = [{model = "llama*"}]', "must be one model name, not a glob"),
        ('[models."x"]\ntargets = [{model = "llama3", wieght = 2}]', "unknown setting 'wieght'"),
        ('[models."x"]\ntarget = "llama3"\n[routing]\nmax_attempts = 0', "max_attempts must be"),
    ],
)
def test_a_bad_routing_table_stops_start_up_with_one_line(tmp_path, table, named):
    path = write_config(tmp_path / "relay.toml", BACKENDS + table)
    result = run_gunicorn({"RELAY_CONFIG": path})
    assert result.returncode == 2
    lines = [x for x in result.stderr.splitlines() if x.startswith("relay: configuration error:")]
    assert len(lines) == 1 and named in lines[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout
