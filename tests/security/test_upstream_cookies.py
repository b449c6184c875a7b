"""An upstream's cookies are never kept: a Set-Cookie answered to one caller's request must not
ride along on the next request, which may be another key's (docs/threat-model.md)."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from werkzeug.wrappers import Request, Response

from tests.conftest import API_KEY
from tests.fakes.server import ServerThread

OTHER_KEY = "sk-relay-other-key-000000000002"


class CookieSetter:
    """An OpenAI-compatible upstream that sets a cookie on every answer and notes the cookies
    each request brought."""

    def __init__(self) -> None:
        self.cookies: list[str | None] = []
        self.server = ServerThread(self.wsgi)
        self.url = self.server.url

    def wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        request.get_data()
        self.cookies.append(request.headers.get("Cookie"))
        response = Response('{"results": [{"flagged": false}]}', content_type="application/json")
        response.set_cookie("upstream_session", "secret-of-the-first-caller", path="/")
        return response(environ, start_response)


@pytest.fixture(scope="module")
def upstream():
    fake = CookieSetter()
    yield fake
    fake.server.close()


def test_an_upstream_cookie_never_reaches_a_later_request(start_gateway, upstream, tmp_path):
    config = tmp_path / "relay.toml"
    config.write_text(
        f'[backends.openai]\ntype = "openai"\nurl = "{upstream.url}/v1"\nkey_env = "UP_KEY"\n'
        'models = ["gpt-*"]\npassthrough = true\n'
    )
    gw = start_gateway(
        {"RELAY_CONFIG": str(config), "RELAY_API_KEYS": f"{API_KEY},{OTHER_KEY}", "UP_KEY": "k"}
    )
    for key in (API_KEY, OTHER_KEY, API_KEY):
        # A pass-through body is streamed on (form data for requests): the session's way.
        resp = requests.post(
            gw.url + "/v1/moderations",
            json={"input": "x"},
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )
        assert resp.status_code == 200, resp.text
    assert len(upstream.cookies) == 3
    assert upstream.cookies == [None, None, None]
