"""The README and docs/ stay true: their examples run against a real gateway, their settings
table matches config.py, and their links between pages resolve."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import config
from tests.conftest import API_KEY, ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TEXT = {page: page.read_text() for page in PAGES}
# Today's count of executed examples; a page may move them, not lose them.
CURL_BLOCKS, CURL_COMMANDS, PYTHON_EXAMPLES = 11, 14, 5


def code_blocks(language: str) -> list[tuple[Path, str]]:
    return [
        (page, block)
        for page, text in TEXT.items()
        for block in re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)
    ]


def curl_blocks() -> list[tuple[Path, str]]:
    # Blocks that need more than $RELAY and $KEY (a Dify app, a conversation id, an image
    # model) are covered by the Dify and image tests instead.
    return [
        (page, b)
        for page, b in code_blocks("bash")
        if "curl" in b and "$RELAY" in b and set(re.findall(r"\$([A-Z_]+)", b)) <= {"RELAY", "KEY"}
    ]


def test_every_environment_variable_is_documented():
    table = TEXT[ROOT / "docs" / "configuration.md"]
    for name in config.ENV_VARS:
        assert f"| `{name}` |" in table, name


def test_ci_runs_the_readme_test_command():
    readme = TEXT[ROOT / "README.md"]
    assert "./scripts/test.sh      # run every check and the whole test suite" in readme
    assert "./scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def test_the_readme_stays_short_and_links_every_page():
    readme = TEXT[ROOT / "README.md"]
    assert len(readme.splitlines()) <= 250
    for page in PAGES[1:]:
        assert f"](docs/{page.name})" in readme, page.name


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    return {slug(h) for h in re.findall(r"^#{1,6} (.*)$", prose, flags=re.M)}


def test_links_between_pages_resolve():
    checked = 0
    for page, text in TEXT.items():
        prose = re.sub(r"```.*?```", "", text, flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", prose):
            if re.match(r"[a-z]+:", target):
                continue  # an absolute URL
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            assert linked.exists(), (page.name, target)
            if anchor:
                assert anchor in anchors(linked.read_text()), (page.name, target)
            checked += 1
    assert checked >= 50


def test_curl_examples_work(gateway, ollama):
    ollama.script("nomic-embed-text")  # the embedding model the examples use
    blocks = curl_blocks()
    assert len(blocks) >= CURL_BLOCKS
    env = {"RELAY": gateway.url, "KEY": API_KEY, "PATH": "/usr/bin:/bin"}
    commands = 0
    for page, block in blocks:
        for command in re.split(r"\n(?=curl )", block.strip()):
            out = subprocess.run(
                ["bash", "-c", command], env=env, capture_output=True, text=True, timeout=30
            )
            assert out.returncode == 0, (page.name, command, out.stderr)
            assert out.stdout and '{"error":{' not in out.stdout, (page.name, command, out.stdout)
            commands += 1
    assert commands >= CURL_COMMANDS


def test_python_examples_work(gateway, ollama):
    ollama.script("nomic-embed-text")
    examples = [(page, b) for page, b in code_blocks("python") if "OpenAI(" in b]
    assert len(examples) >= PYTHON_EXAMPLES
    for page, block in examples:
        source = block.replace("http://127.0.0.1:3000/v1", gateway.url + "/v1")
        source = source.replace("sk-team-a-3c1f9e27d4", API_KEY)
        exec(compile(source, str(page.relative_to(ROOT)), "exec"), {})


def test_comments_cite_documents_in_the_repository():
    """Code cites docs/design.md sections and docs pages by heading; each must exist."""
    sources = [
        p
        for pattern in ("*.py", "*.sh", "*.conf", "*.yml", "*.service", "Dockerfile", ".env*")
        for p in ROOT.rglob(pattern)
        if not {".venv", "node_modules", ".git", ".bench"} & set(p.relative_to(ROOT).parts)
        and p != Path(__file__)
    ]
    headings = {page.name: re.findall(r"^#{1,6} (.*)$", TEXT[page], flags=re.M) for page in PAGES}
    cited = 0
    for path in sources:
        text = re.sub(r"\s*\n\s*(#\s*)?", " ", path.read_text(errors="replace"))
        where = path.relative_to(ROOT)
        for stale in ("DESIGN §", "reference/", 'README "', "README, "):
            assert stale not in text, (where, stale)
        # The wire references Relay was built from live outside the repository.
        outside = re.search(r"\b(openai|ollama|anthropic|dify)-api(\.md)? ?§", text)
        assert outside is None, (where, outside.group(0) if outside else "")
        for page, section in re.findall(r"docs/([a-z-]+\.md) §(\d+(?:\.\d+)?)", text):
            assert any(h.startswith((f"{section}. ", f"{section} ")) for h in headings[page]), (
                where,
                page,
                section,
            )
            cited += 1
        for page, title in re.findall(r'docs/([a-z-]+\.md) "([^"]+)"', text):
            assert any(h.startswith(title) for h in headings[page]), (where, page, title)
            cited += 1
        for page in re.findall(r"docs/([a-z/-]+\.md)", text):
            assert (ROOT / "docs" / page).exists(), (where, page)
    assert cited >= 40
