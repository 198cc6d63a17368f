"""The labelling page's server on its own (no model): token, what is served, size limits, validation, and
the feedback a submission becomes. Every refusal must leave the rater waiting with nothing accepted."""

from __future__ import annotations

import io
import json
import threading

import numpy as np
import pytest
import torch
from human_client import PageClient
from PIL import Image

from herobench.core.images import sha256_of_image, to_uint8
from herobench.errors import HerobenchError
from herobench.harness.human import MAX_BODY_BYTES, HumanRater
from herobench.types import Feedback, RatingRequest, Verdict

N = 4


def _request(iteration=1, prev_best=None, seed=0) -> RatingRequest:
    images = torch.rand(N, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    return RatingRequest(images, ("1 hand",) * N, tuple(sha256_of_image(i) for i in images), iteration,
                         budget_labels=16, labels_spent=4 * (iteration - 1), prev_best_sha256=prev_best, task="hand")


class Pending:
    """``rater.rate`` running in a thread (it blocks until the page submits)."""

    def __init__(self, rater, request, protocol="hero", groups=None):
        self.result: Feedback | BaseException | None = None
        verdicts = [Verdict(success=False, score=0.0, reason="unused")] * N

        def go():
            try:
                self.result = rater.rate(verdicts, protocol, groups=groups, request=request)
            except BaseException as e:  # noqa: BLE001 - handed to the test
                self.result = e

        self.thread = threading.Thread(target=go, daemon=True)
        self.thread.start()

    def get(self, timeout=10.0) -> Feedback:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "rate() did not return"
        assert isinstance(self.result, Feedback), self.result
        return self.result


@pytest.fixture
def rater(tmp_path):
    with HumanRater(tmp_path / "human") as r:
        yield r


@pytest.fixture
def page(rater):
    req = _request()
    pending = Pending(rater, req)
    client = PageClient(rater.url)
    batch = client.wait_batch(1)
    return rater, client, batch, pending, req


def _still_waiting(client, pending, batch_id):
    assert pending.thread.is_alive() and pending.result is None
    st = client.state()
    assert st["status"] == "labelling" and st["batch"]["id"] == batch_id


def test_url_is_loopback_with_a_long_random_token(tmp_path):
    with HumanRater(tmp_path / "a") as a, HumanRater(tmp_path / "b") as b:
        assert a.url.startswith("http://127.0.0.1:") and "?token=" in a.url
        assert len(a.token) >= 24 and a.token != b.token


@pytest.mark.parametrize("method, path", [("GET", "/"), ("GET", "/app.js"), ("GET", "/api/state"),
                                          ("GET", "/api/image/{id}/0.png"), ("POST", "/api/submit"),
                                          ("GET", "/nope")])
@pytest.mark.parametrize("token", [None, "wrong", ""])
def test_every_request_without_the_right_token_is_403(page, method, path, token):
    rater, client, batch, pending, _ = page
    body = json.dumps({"batch": batch["id"], "good": [True] * N, "best": 0}).encode() if method == "POST" else None
    status, out = client.request(method, path.format(id=batch["id"]), body, token=token)
    assert status == 403 and b"token" in out
    # the token in the query string of a wrong URL is refused too
    q = "" if token is None else f"?token={token}"
    status, _ = client.request(method, path.format(id=batch["id"]) + q, body, token=None)
    assert status == 403
    _still_waiting(client, pending, batch["id"])


def test_the_token_works_as_query_parameter_or_header(page):
    rater, client, batch, _, _ = page
    status, html = client.request("GET", f"/?token={client.token}", token=None)
    assert status == 200 and b"<title>herobench" in html
    assert f"app.js?token={client.token}".encode() in html  # the page's own assets carry it
    status, _ = client.request("GET", "/app.css", token=client.token)
    assert status == 200


@pytest.mark.parametrize("path", [
    "/../../../../etc/passwd", "/..%2f..%2f..%2fetc%2fpasswd", "/%2e%2e/%2e%2e/etc/passwd",
    "/app.js/../../pyproject.toml", "//etc/passwd", "/webui/app.js", "/human.py", "/herobench/harness/human.py",
    "/api/image/{id}/../../../../etc/passwd", "/api/image/{id}/0.png/../../x", "/api/image/..%2f/0.png",
    "/api/image/{id}/-1.png", "/api/image/{id}/4.png", "/api/image/{id}/99999.png", "/api/image/other/0.png",
    "/api/image/{id}/0.jpg", "/api/images/{id}/0.png",
])
def test_path_traversal_and_unknown_paths_are_404(page, path):
    _, client, batch, pending, _ = page
    status, body = client.request("GET", path.format(id=batch["id"]))
    assert status == 404, body
    assert b"root:" not in body and b"import" not in body
    _still_waiting(client, pending, batch["id"])


def test_only_the_current_batch_images_are_served_exactly(page):
    _, client, batch, _, req = page
    for i in range(N):
        png = client.image(batch["id"], i)
        arr = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
        assert np.array_equal(arr, to_uint8(req.images[i : i + 1])[0])
    assert client.request("GET", f"/api/image/{batch['id']}/best.png")[0] == 404  # no previous best yet
    assert batch["labels_spent"] == 0 and batch["budget_labels"] == 16 and batch["n"] == N
    assert batch["prompts"] == ["1 hand"] * N and batch["needs_best"] is True


def test_oversized_body_is_413_and_nothing_is_accepted(page):
    _, client, batch, pending, _ = page
    big = json.dumps({"batch": batch["id"], "good": [True] * N, "best": 0, "pad": "x" * MAX_BODY_BYTES}).encode()
    status, out = client.request("POST", "/api/submit", big, {"Content-Type": "application/json"})
    assert status == 413 and b"larger than" in out
    # a lying Content-Length is refused before any body is read
    status, _ = client.request("POST", "/api/submit", b"{}", {"Content-Length": str(10**9)})
    assert status == 413
    _still_waiting(client, pending, batch["id"])


def _bodies(bid):
    ok = {"batch": bid, "good": [True, False, True, False], "best": 2}
    return [
        (b"not json", 400, "not valid JSON"),
        (b"\xff\xfe", 400, "not valid JSON"),
        (b"[true, false]", 400, "JSON object"),
        (json.dumps({"good": ok["good"]}).encode(), 400, "needs keys"),
        (json.dumps({**ok, "extra": 1}).encode(), 400, "needs keys"),
        (json.dumps({**ok, "good": [True, False, True]}).encode(), 400, "3 labels but the batch has 4"),
        (json.dumps({**ok, "good": [True, False, True, False, True]}).encode(), 400, "5 labels"),
        (json.dumps({**ok, "good": [1, 0, 1, 0]}).encode(), 400, "true/false"),
        (json.dumps({**ok, "good": "tftf"}).encode(), 400, "true/false"),
        (json.dumps({**ok, "best": 1}).encode(), 400, "must be one of the good images"),
        (json.dumps({**ok, "best": 4}).encode(), 400, "image index"),
        (json.dumps({**ok, "best": -1}).encode(), 400, "image index"),
        (json.dumps({**ok, "best": True}).encode(), 400, "image index"),
        (json.dumps({**ok, "best": "2"}).encode(), 400, "image index"),
        (json.dumps({**ok, "best": None}).encode(), 400, "star the best"),  # HERO: nothing to keep yet
        (json.dumps({**ok, "batch": "it0-9"}).encode(), 409, "reload the page"),
    ]


def test_malformed_submissions_are_400_with_a_message_and_nothing_is_accepted(page, tmp_path):
    _, client, batch, pending, req = page
    for body, want, needle in _bodies(batch["id"]):
        status, out = client.request("POST", "/api/submit", body, {"Content-Type": "application/json"})
        assert status == want, (body, out)
        assert needle in json.loads(out)["error"], (body, out)
        _still_waiting(client, pending, batch["id"])
    assert not (tmp_path / "human" / "images").exists()  # nothing kept either
    status, out = client.submit(batch["id"], [True, False, True, False], best=2)
    assert status == 200 and out == {"ok": True, "good": 2, "best": 2}
    assert pending.get() == Feedback(good=(True, False, True, False), best=2)
    assert client.state()["status"] == "submitted"
    assert client.submit(batch["id"], [False] * N)[0] == 409  # one submission per batch
    kept = sorted(p.stem for p in (tmp_path / "human" / "images").glob("*.png"))
    assert kept == sorted(req.image_sha256)


def test_previous_best_is_shown_and_may_be_kept(rater, tmp_path):
    client = PageClient(rater.url)
    first = Pending(rater, _request(1))
    b1 = client.wait_batch(1)
    assert client.submit(b1["id"], [False] * N)[0] == 200  # no good image: no best needed
    assert first.get() == Feedback(good=(False,) * N, best=None)
    first = Pending(rater, _request(1, seed=1))
    b1 = client.wait_batch(1)
    assert client.state()["saved_through"] == 1
    client.submit(b1["id"], [True, True, False, False], best=1)
    req1 = _request(1, seed=1)
    assert first.get().best == 1
    second = Pending(rater, _request(2, prev_best=req1.image_sha256[1], seed=2))
    b2 = client.wait_batch(2)
    assert b2["has_prev_best"] and b2["prev_best_picture"] and not b2["needs_best"]
    stored = (tmp_path / "human" / "images" / f"{req1.image_sha256[1]}.png").read_bytes()
    assert client.image(b2["id"], "best") == stored
    assert client.submit(b2["id"], [True, False, False, False], best=None)[0] == 200  # keep the previous
    assert second.get() == Feedback(good=(True, False, False, False), best=None)


def test_d3po_and_scalar_protocols(rater):
    client = PageClient(rater.url)
    p = Pending(rater, _request(1), protocol="d3po", groups=[0, 0, 1, 1])
    b = client.wait_batch(1)
    assert b["star"] is False
    assert client.submit(b["id"], [True, False, False, True], best=0)[0] == 400  # no best in d3po
    client.submit(b["id"], [True, False, False, True])
    assert p.get() == Feedback(good=(True, False, False, True), pairs=((0, 1), (3, 2)))
    p = Pending(rater, _request(2), protocol="scalar")
    b = client.wait_batch(2)
    client.submit(b["id"], [False, True, False, False])
    assert p.get() == Feedback(good=(False, True, False, False), scores=(0.0, 1.0, 0.0, 0.0))
    assert rater.rate([], "none") == Feedback(good=())


def test_rate_needs_the_images_and_a_free_port(rater):
    with pytest.raises(ValueError, match="needs the images"):
        rater.rate([Verdict(True, 1.0, "r")], "hero")
    port = int(rater.url.split(":")[2].split("/")[0])
    with pytest.raises(HerobenchError, match=f"cannot serve the labelling page on 127.0.0.1:{port}"):
        HumanRater(rater.store, port=port)


def test_a_resumed_run_serves_its_page_on_the_same_port(tmp_path):
    # the browser keeps unsubmitted marks per origin (host and port): a resume must not move the page
    with HumanRater(tmp_path / "human") as first:
        port = first.url.split(":")[2].split("/")[0]
    assert (tmp_path / "human" / "port").read_text().strip() == port
    with HumanRater(tmp_path / "human") as again:
        assert again.url.split(":")[2].split("/")[0] == port
        assert again.token != first.token  # a new token, the same origin
        with HumanRater(tmp_path / "human") as busy:  # the recorded port is taken: another one, no error
            assert busy.url.split(":")[2].split("/")[0] != port
