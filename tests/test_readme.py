"""The README stays true: its examples run against a real gateway, its tables match config.py."""

from __future__ import annotations

import re
import subprocess

import config
from tests.conftest import API_KEY, ROOT

README = (ROOT / "README.md").read_text()


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_every_environment_variable_is_documented():
    for name in config.ENV_VARS:
        assert f"| `{name}` |" in README, name


def test_ci_runs_the_readme_test_command():
    assert "./scripts/test.sh      # run every check and the whole test suite" in README
    assert "./scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def test_curl_examples_work(gateway, ollama):
    ollama.script("nomic-embed-text")  # the embedding model the examples use
    # Blocks that need more than $RELAY and $KEY (a Dify app, a conversation id) are covered
    # by the Dify tests instead.
    blocks = [
        b
        for b in code_blocks("bash")
        if "curl" in b and "$RELAY" in b and set(re.findall(r"\$([A-Z_]+)", b)) <= {"RELAY", "KEY"}
    ]
    assert len(blocks) >= 4
    env = {"RELAY": gateway.url, "KEY": API_KEY, "PATH": "/usr/bin:/bin"}
    for block in blocks:
        for command in re.split(r"\n(?=curl )", block.strip()):
            out = subprocess.run(
                ["bash", "-c", command], env=env, capture_output=True, text=True, timeout=30
            )
            assert out.returncode == 0, (command, out.stderr)
            assert out.stdout and '{"error":{' not in out.stdout, (command, out.stdout)


def test_python_examples_work(gateway, ollama):
    ollama.script("nomic-embed-text")
    for block in code_blocks("python"):
        if "OpenAI(" not in block:
            continue
        source = block.replace("http://127.0.0.1:3000/v1", gateway.url + "/v1")
        source = source.replace("sk-team-a-3c1f9e27d4", API_KEY)
        exec(compile(source, "README.md", "exec"), {})
