"""Helpers for the labelling-page tests: a tiny scripted "person" (raw HTTP on loopback; http.client sends
paths as given, so traversal attempts reach the server unchanged) and one shared tiny world."""

from __future__ import annotations

import http.client
import json
import time
from pathlib import Path
from urllib.parse import urlsplit

from tinysd import build_tiny_sd

_WORLDS: dict[Path, Path] = {}


def tiny_world_dir(tmp_path_factory) -> Path:
    """A tiny random-weight SD marked as a GlyphWorld model, built once per session for every module that
    asks (module fixtures in two files would otherwise build it twice)."""
    key = tmp_path_factory.getbasetemp()
    if key not in _WORLDS:
        path = build_tiny_sd(tmp_path_factory.mktemp("tinyworld_human"), prediction_type="v_prediction", seed=3)
        (path / "herobench.json").write_text(json.dumps({"backend": "glyphworld", "sampler": {"steps": 3}}))
        _WORLDS[key] = path
    return _WORLDS[key]


class PageClient:
    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port
        self.token = parts.query.removeprefix("token=")

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                token: str | None = "default") -> tuple[int, bytes]:
        """``token="default"`` sends the right token as a header; ``None`` sends none; a string sends it."""
        headers = dict(headers or {})
        tok = self.token if token == "default" else token
        if tok is not None:
            headers["X-Herobench-Token"] = tok
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers)
            res = conn.getresponse()
            return res.status, res.read()
        finally:
            conn.close()

    def state(self) -> dict:
        status, body = self.request("GET", "/api/state")
        assert status == 200, body
        return json.loads(body)

    def wait_batch(self, iteration: int, timeout: float = 60.0) -> dict:
        """The batch of ``iteration`` once it is up for labelling."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                st = self.state()
            except OSError:
                st = {}
            b = st.get("batch")
            if st.get("status") == "labelling" and b and b["iteration"] == iteration:
                return b
            time.sleep(0.05)
        raise AssertionError(f"batch {iteration} never came up (last state {st})")

    def submit(self, batch_id: str, good: list[bool], best: int | None = None) -> tuple[int, dict]:
        body = json.dumps({"batch": batch_id, "good": good, "best": best}).encode()
        status, out = self.request("POST", "/api/submit", body, {"Content-Type": "application/json"})
        return status, json.loads(out)

    def image(self, batch_id: str, which: int | str) -> bytes:
        status, body = self.request("GET", f"/api/image/{batch_id}/{which}.png")
        assert status == 200, body
        return body
