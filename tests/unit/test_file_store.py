"""The lasting-files policy on its own: which types are kept, names, and the URLs handed out."""

from __future__ import annotations

import pytest

from services.state.file_store import ALLOWED, FileRefusedError, LastingFiles, LocalFileStore


@pytest.fixture
def files(tmp_path) -> LastingFiles:
    return LastingFiles(LocalFileStore(str(tmp_path)), max_bytes=100, public_url=None)


@pytest.mark.parametrize(
    ("served", "declared", "url", "kind"),
    [
        ("image/png", "application/pdf", "https://d/x.bin", "image/png"),  # as served wins
        ("image/JPG; charset=binary", "", "https://d/x", "image/jpeg"),
        ("application/octet-stream", "audio/mpeg", "https://d/x", "audio/mpeg"),
        ("", "", "https://d/files/tools/report.PDF?sign=s", "application/pdf"),
        ("binary/octet-stream", "", "https://d/a.jpeg", "image/jpeg"),
    ],
)
def test_media_type_is_served_then_declared_then_by_name(files, served, declared, url, kind):
    assert files.media_type(served, declared, url) == kind


@pytest.mark.parametrize(
    "served",
    ["text/html", "application/javascript", "image/svg+xml", "application/xml", "text/xml"],
)
def test_types_a_browser_would_run_are_refused(files, served):
    with pytest.raises(FileRefusedError):
        files.media_type(served, "image/png", "https://d/x.png")
    assert served not in ALLOWED


def test_kept_files_get_unguessable_names_and_open_only_by_them(files, tmp_path):
    first = files.keep(b"data", "image/png", "https://relay.example.com")
    second = files.keep(b"data", "image/png", "https://relay.example.com")
    assert first != second and first.startswith("https://relay.example.com/files/")
    name = first.rsplit("/", 1)[1]
    found = files.open(name)
    assert found and found.media_type == "image/png" and found.inline
    assert files.open(name.replace(".png", ".txt")) is None  # the extension is part of the name
    for bad in ("../" + name, name + "/", ".incoming-x", "x" * 32 + ".exe", "x" * 31 + ".png"):
        assert files.open(bad) is None
    with pytest.raises(FileRefusedError, match="larger than 100 bytes"):
        files.keep(b"x" * 101, "image/png", "")


def test_public_url_wins_over_the_request_and_documents_download(tmp_path):
    files = LastingFiles(LocalFileStore(str(tmp_path)), 100, "https://files.example.com/r")
    url = files.keep(b"PK", ALLOWED_KIND, "http://internal:3000")
    assert url.startswith("https://files.example.com/r/files/") and url.endswith(".docx")
    found = files.open(url.rsplit("/", 1)[1])
    assert found and not found.inline  # office documents download rather than render


ALLOWED_KIND = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
