"""The labelling server under load and abuse, on 127.0.0.1 only: 200 polling clients and 50 concurrent
submits (exactly one accepted), malformed requests answered 400 without a traceback, Host/Origin checked,
and a browser-storage key for marks that survives a resume and never holds the token."""

from __future__ import annotations

import http.client
import json
import socket
import sys
import threading
import time
from importlib import resources

import pytest
import torch

from herobench.core.images import sha256_of_image
from herobench.harness.human import HumanRater
from herobench.harness.labelling import LabellingServer
from herobench.types import Feedback, RatingRequest

N = 4


def _request(iteration=1, seed=0) -> RatingRequest:
    images = torch.rand(N, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    return RatingRequest(images, ("1 hand",) * N, tuple(sha256_of_image(i) for i in images), iteration,
                         budget_labels=16, labels_spent=0, prev_best_sha256=None, task="hand")


class Page:
    """A rater waiting for a batch (``rate`` in a thread) and its address."""

    def __init__(self, rater: HumanRater, request: RatingRequest):
        self.rater, self.result = rater, None
        self.port = rater._server.server_address[1]
        self.token = rater.token
        self.thread = threading.Thread(target=self._rate, args=(request,), daemon=True)
        self.thread.start()
        deadline = time.time() + 10
        while (batch := self.state()["batch"]) is None:
            assert time.time() < deadline
            time.sleep(0.02)
        self.batch = batch

    def _rate(self, request):
        try:
            self.result = self.rater.rate(None, "hero", request=request)
        except BaseException as e:  # noqa: BLE001
            self.result = e

    def get(self, path: str, headers: dict | None = None, timeout: float = 10) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", path, headers={"X-Herobench-Token": self.token, **(headers or {})})
            res = conn.getresponse()
            return res.status, res.read()
        finally:
            conn.close()

    def state(self) -> dict:
        status, body = self.get("/api/state")
        assert status == 200, body
        return json.loads(body)

    def submission(self) -> bytes:
        return json.dumps({"batch": self.batch["id"], "good": [True, False, False, False], "best": 0}).encode()

    def raw(self, data: bytes, half_close: bool = False, timeout: float = 20) -> tuple[int | None, bytes]:
        """Send bytes as they are; the status line's code (None when there is none) and the response."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(data)
            if half_close:
                s.shutdown(socket.SHUT_WR)
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        reply = b"".join(chunks)
        head = reply.split(b"\r\n", 1)[0].split()
        return (int(head[1]) if len(head) > 1 and head[1].isdigit() else None), reply


def _post(page: Page, body: bytes, length: str | bytes | None = None, extra: bytes = b"") -> bytes:
    length = str(len(body)).encode() if length is None else (length if isinstance(length, bytes) else length.encode())
    return (b"POST /api/submit HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nX-Herobench-Token: "
            + page.token.encode() + b"\r\nContent-Type: application/json\r\nContent-Length: " + length
            + b"\r\n" + extra + b"\r\n" + body)


@pytest.fixture
def page(tmp_path):
    with HumanRater(tmp_path / "human") as rater:
        p = Page(rater, _request())
        yield p


def test_the_listen_backlog_holds_200_clients():
    assert LabellingServer.request_queue_size >= 200  # socketserver's default is 5


def test_malformed_requests_are_400_without_a_traceback(page, capfd):
    good = page.submission()
    cases = {
        "5000-digit integer": _post(page, good.replace(b'"best": 0', b'"best": ' + b"9" * 5000)),
        "deep nesting": _post(page, b"[" * 60_000),
        "not UTF-8": _post(page, b'{"batch": "\xff\xfe"}'),
        "arabic-indic digits": _post(page, good, "١٠٤".encode()),
        "superscript digit": _post(page, good, "²".encode()),
        "negative length": _post(page, good, "-1"),
        "5000-digit length": _post(page, good, "9" * 5000),
        "two lengths": _post(page, good, "10, 10"),
        "infinite best": _post(page, good.replace(b'"best": 0', b'"best": 1e400')),
    }
    for name, data in cases.items():
        status, reply = page.raw(data)
        assert status == 400, (name, reply[:300])
        assert b'"error"' in reply, (name, reply[:300])
    # a body that ends before its Content-Length
    status, reply = page.raw(_post(page, good[:10], str(len(good))), half_close=True)
    assert status == 400 and b"ended after 10 of" in reply, reply[:300]
    _, reply = page.raw(b"GARBAGE\r\n\r\n")  # (answered the HTTP/0.9 way: no status line)
    assert b"400" in reply
    status, _ = page.raw(b"GET /api/image/" + page.batch["id"].encode() + "/١.png?token=".encode() +
                         page.token.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    assert status == 404  # only ASCII digits name an image
    assert page.state()["status"] == "labelling" and page.result is None  # nothing was accepted
    status, reply = page.raw(_post(page, good))
    assert status == 200, reply
    page.thread.join(10)
    assert isinstance(page.result, Feedback) and page.result.best == 0
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception" not in err, err


@pytest.mark.parametrize("headers, status", [
    ({"Host": "evil.example"}, 403),
    ({"Host": "evil.example:8765"}, 403),
    ({"Host": "127.0.0.1.evil.example"}, 403),
    ({"Host": "localhost:9000"}, 200),  # an SSH tunnel forwards another local port
    ({"Host": "[::1]:9000"}, 200),
    ({"Origin": "http://evil.example"}, 403),
    ({"Origin": "null"}, 403),
    ({"Host": "127.0.0.1:4321", "Origin": "http://127.0.0.1:4321"}, 200),
    ({"Host": "localhost:4321", "Origin": "http://127.0.0.1:4321"}, 403),
])
def test_host_and_origin_must_be_the_served_page(page, headers, status):
    got, body = page.get("/api/state", headers)
    assert got == status, body
    if status == 403:
        assert b"Host" in body or b"Origin" in body, body


def test_a_cross_site_submit_is_refused_and_nothing_is_accepted(page):
    status, reply = page.raw(_post(page, page.submission(), extra=b"Origin: http://evil.example\r\n"))
    assert status == 403 and b"Origin" in reply
    assert page.state()["status"] == "labelling"


def test_the_storage_key_survives_a_resume_and_never_holds_the_token(tmp_path):
    keys = []
    for run in ("before", "after"):  # the same batch of the same run, replayed by a resumed process
        with HumanRater(tmp_path / run) as rater:
            p = Page(rater, _request(iteration=3))
            keys.append(p.batch["store_key"])
            assert rater.token not in p.batch["store_key"]
    with HumanRater(tmp_path / "other") as rater:
        other = Page(rater, _request(iteration=3, seed=1)).batch["store_key"]  # other pictures
    assert keys[0] == keys[1] and other != keys[0]
    script = resources.files("herobench.harness").joinpath("webui", "app.js").read_text()
    assert "const storeKey = () => batch.store_key;" in script and "${TOKEN}" not in script.split("storeKey")[1][:80]


def test_200_polling_clients_and_50_concurrent_submits_exactly_one_accepted(page):
    """Bounded load on loopback: every request answered, p95 well under a browser's patience."""
    n_get, n_post = 200, 50
    start = threading.Barrier(n_get + n_post)
    results: list[tuple[str, int | str, float]] = []
    lock = threading.Lock()
    body = page.submission()

    def client(kind: str) -> None:
        start.wait()
        t0 = time.perf_counter()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", page.port, timeout=30)
            headers = {"X-Herobench-Token": page.token}
            if kind == "POST":
                conn.request("POST", "/api/submit", body=body, headers={**headers, "Content-Type": "application/json"})
            else:
                conn.request("GET", "/api/state", headers=headers)
            res = conn.getresponse()
            res.read()
            outcome: int | str = res.status
            conn.close()
        except OSError as e:
            outcome = type(e).__name__
        with lock:
            results.append((kind, outcome, time.perf_counter() - t0))

    threads = [threading.Thread(target=client, args=("POST" if i % 5 == 0 else "GET",), daemon=True)
               for i in range(n_get + n_post)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    wall = time.perf_counter() - t0
    assert len(results) == n_get + n_post, "a client never finished"
    latencies = sorted(r[2] for r in results)
    p95 = latencies[int(0.95 * len(latencies)) - 1]
    print(f"\nlabelling server: {n_get} GETs + {n_post} POSTs in {wall:.2f} s, p50 "
          f"{latencies[len(latencies) // 2] * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms",
          file=sys.stderr)
    gets = [o for k, o, _ in results if k == "GET"]
    posts = [o for k, o, _ in results if k == "POST"]
    assert gets == [200] * n_get, sorted(map(str, gets))
    assert sorted(posts, key=str) == [200] + [409] * (n_post - 1), posts
    assert p95 < 3.0, f"p95 {p95:.2f} s"  # (a backlog of 5 gave a p95 of 27.7 s: SYN retries)
    page.thread.join(10)
    assert isinstance(page.result, Feedback)
