"""A webhook's secret header from a systemd credential ($CREDENTIALS_DIRECTORY, LoadCredential=),
so it need not sit in a config file that group vfpd (the vfpctl users) can read; and the header
reaching a real HTTP receiver."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import pytest

from vfpd import config
from vfpd.config import ConfigError
from vfpd.service.notify import deliver_webhook

CONFIG = """
[notify.webhook]
url = "{url}"
headers = {{ Authorization = {{ credential = "webhook-authorization" }}, X-Plain = "p" }}
"""


def load(tmp_path: Path, env: dict[str, str], url: str = "http://127.0.0.1:9/") -> config.Config:
    p = tmp_path / "config.toml"
    p.write_text(CONFIG.format(url=url))
    return config.load(p, env)


def test_header_read_from_the_credentials_directory(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "webhook-authorization").write_text("Bearer s3cret\n")
    cfg = load(tmp_path, {"CREDENTIALS_DIRECTORY": str(creds)})
    assert cfg.notify.webhook is not None
    assert dict(cfg.notify.webhook.headers) == {"Authorization": "Bearer s3cret", "X-Plain": "p"}


@pytest.mark.parametrize("case", ["no-directory", "missing", "bad-shape"])
def test_credential_problems_are_config_errors(tmp_path: Path, case: str) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    env = {} if case == "no-directory" else {"CREDENTIALS_DIRECTORY": str(creds)}
    p = tmp_path / "config.toml"
    text = CONFIG.format(url="http://127.0.0.1:9/")
    if case == "bad-shape":
        text = text.replace('credential = "webhook-authorization"', 'credential = "../etc/x"')
    p.write_text(text)
    with pytest.raises(ConfigError, match="headers"):
        config.load(p, env)


def test_the_credential_header_reaches_the_receiver(tmp_path: Path) -> None:
    seen: list[str | None] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server API
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(self.headers["Authorization"])
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        creds = tmp_path / "creds"
        creds.mkdir()
        (creds / "webhook-authorization").write_text("Bearer s3cret")
        cfg = load(tmp_path, {"CREDENTIALS_DIRECTORY": str(creds)},
                   f"http://127.0.0.1:{server.server_port}/hook")
        assert cfg.notify.webhook is not None
        deliver_webhook(cfg.notify.webhook.url, {"event": "duplicate"}, 5.0,
                        cfg.notify.webhook.headers)
    finally:
        server.shutdown()
    assert seen == ["Bearer s3cret"]
