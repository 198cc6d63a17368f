"""The labelling page's server: what a browser may ask for and what a submission must look like.

Used by ``herobench.harness.human.HumanRater`` (the run's side). The server is stdlib ``http.server`` in a
background thread; the page (``webui/``) polls ``/api/state``, loads ``/api/image/<batch>/<i>.png`` and
posts ``/api/submit``. See ``herobench.harness.human`` for the security model; everything is enforced here.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from herobench.errors import HerobenchError

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024  # a labelling of 64 images is < 1 KiB of JSON
TOKEN_HEADER = "X-Herobench-Token"
_STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/app.css": ("app.css", "text/css; charset=utf-8"),
}
_IMAGE = re.compile(r"/api/image/([A-Za-z0-9-]{1,40})/(\d{1,5}|best)\.png")
_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the token is in the URL: never leak it
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; frame-ancestors 'none'",
}


@dataclass(frozen=True)
class Batch:
    """One batch as the page sees it (PNG bytes, not tensors)."""

    id: str
    iteration: int
    protocol: str
    prompts: tuple[str, ...]
    pngs: tuple[bytes, ...]
    budget_labels: int
    labels_spent: int
    has_prev_best: bool
    prev_best_png: bytes | None  # None when there is no previous best or no stored picture of it
    task: str = ""

    @property
    def needs_best(self) -> bool:
        """HERO with no previous best: a batch with any good image must star one."""
        return self.protocol == "hero" and not self.has_prev_best

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id, "iteration": self.iteration, "protocol": self.protocol, "task": self.task,
            "prompts": list(self.prompts), "n": len(self.pngs), "budget_labels": self.budget_labels,
            "labels_spent": self.labels_spent, "has_prev_best": self.has_prev_best,
            "prev_best_picture": self.prev_best_png is not None,
            "star": self.protocol == "hero", "needs_best": self.needs_best,
        }


@dataclass(frozen=True)
class Submission:
    good: tuple[bool, ...]
    best: int | None


class SubmissionError(Exception):
    """A refused request: ``status`` (HTTP) and a message for the page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def parse_submission(body: bytes, batch: Batch) -> Submission:
    """Validate a page submission ``{"batch": id, "good": [bool × n], "best": int | null}`` for ``batch``.

    Raises:
        SubmissionError: 400 for malformed JSON, unknown or missing keys, a ``good`` list of the wrong
            length or type, a best that is not a good image of this batch (or given where the protocol
            has no best, or missing where HERO needs one); 409 for a submission meant for another batch.
    """
    try:
        obj = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SubmissionError(400, f"the submission is not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise SubmissionError(400, "the submission must be a JSON object")
    keys = set(obj)
    if keys - {"batch", "good", "best"} or not {"batch", "good"} <= keys:
        raise SubmissionError(400, f"the submission needs keys batch, good (and best); got {sorted(keys)}")
    if obj["batch"] != batch.id:
        raise SubmissionError(409, f"this submission is for batch {obj['batch']!r}, the current one is "
                                   f"{batch.id!r}: reload the page")
    good, n = obj["good"], len(batch.pngs)
    if not isinstance(good, list) or not all(isinstance(g, bool) for g in good):
        raise SubmissionError(400, "'good' must be a list of true/false, one per image")
    if len(good) != n:
        raise SubmissionError(400, f"'good' has {len(good)} labels but the batch has {n} images")
    best = obj.get("best")
    if best is not None:
        if batch.protocol != "hero":
            raise SubmissionError(400, f"the {batch.protocol} protocol takes no best image")
        if isinstance(best, bool) or not isinstance(best, int) or not 0 <= best < n:
            raise SubmissionError(400, f"'best' must be an image index in [0, {n}) or null, got {best!r}")
        if not good[best]:
            raise SubmissionError(400, f"the best image ({best + 1}) must be one of the good images")
    elif batch.needs_best and any(good):
        raise SubmissionError(400, "star the best good image: there is no previous best to keep yet")
    return Submission(good=tuple(good), best=best)


class Board:
    """The state shared by the run's thread (publish, wait) and the server's threads (read, submit)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._batch: Batch | None = None
        self._submission: Submission | None = None
        self._saved_through = 0  # the last iteration whose labels the runner took (and recorded)
        self._closed = False

    def publish(self, batch: Batch) -> None:
        with self._cond:
            if self._batch is not None and self._submission is not None:
                self._saved_through = self._batch.iteration
            self._batch, self._submission = batch, None
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def state(self) -> dict[str, Any]:
        with self._cond:
            if self._closed:  # (a browser's kept-alive connection can outlive the listening socket)
                return {"status": "closed", "batch": None, "saved_through": self._saved_through}
            if self._batch is None:
                status = "waiting"
            else:
                status = "submitted" if self._submission is not None else "labelling"
            batch = self._batch.public() if self._batch is not None else None
            return {"status": status, "batch": batch, "saved_through": self._saved_through}

    def image(self, batch_id: str, which: str) -> bytes | None:
        with self._cond:
            b = self._batch
            if b is None or b.id != batch_id:
                return None
            if which == "best":
                return b.prev_best_png
            i = int(which)
            return b.pngs[i] if i < len(b.pngs) else None

    def submit(self, body: bytes) -> Submission:
        with self._cond:
            if self._closed:
                raise SubmissionError(409, "the run has stopped taking labels")
            if self._batch is None:
                raise SubmissionError(409, "there is no batch to label yet")
            if self._submission is not None:
                raise SubmissionError(409, f"batch {self._batch.id!r} was already submitted")
            sub = parse_submission(body, self._batch)
            self._submission = sub
            self._cond.notify_all()
            return sub

    def wait(self, batch_id: str) -> Submission:
        """Block until ``batch_id`` is submitted. Raises HerobenchError when the page is closed first."""
        with self._cond:
            # short waits keep Ctrl-C responsive in the run's thread
            while not (self._batch is not None and self._batch.id == batch_id and self._submission):
                if self._closed:
                    raise HerobenchError("the labelling page was closed before the batch was labelled")
                self._cond.wait(timeout=0.5)
            return self._submission

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class LabellingServer(ThreadingHTTPServer):
    """The HTTP server of one :class:`Board`, guarded by ``token``; each connection in a daemon thread."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, board: Board, token: str) -> None:
        super().__init__(address, _Handler)
        self.board = board
        self.token = token


class _Handler(BaseHTTPRequestHandler):
    server: LabellingServer
    server_version = "herobench"
    sys_version = ""
    timeout = 15  # a stalled client cannot hold a thread for long
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s " + format, self.address_string(), *args)

    # ---------------------------------------------------------------- responses
    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if self.server.board.closed:
            self.close_connection = True
            self.send_header("Connection", "close")
        for k, v in _SECURITY_HEADERS.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: dict) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def _authorised(self, query: str) -> bool:
        given = self.headers.get(TOKEN_HEADER)
        if given is None:
            for part in query.split("&"):
                k, _, v = part.partition("=")
                if k == "token":
                    given = v
                    break
        return given is not None and hmac.compare_digest(given.encode(), self.server.token.encode())

    def _route(self) -> tuple[str, bool]:
        # the raw request target, split by hand: no URL library turns "//x" into a host or decodes "%2e"
        path, _, query = self.path.partition("?")
        if not self._authorised(query):
            self._error(403, "missing or wrong token: open the URL the run printed (it ends with ?token=...)")
            return path, False
        return path, True

    # ---------------------------------------------------------------- methods
    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        path, ok = self._route()
        if not ok:
            return
        board = self.server.board
        if path in _STATIC:
            name, ctype = _STATIC[path]
            body = _static(name)
            if name == "index.html":  # the page's own script and style links carry the (checked) token
                body = body.replace(b"__TOKEN__", self.server.token.encode())
            self._send(200, body, ctype)
        elif path == "/api/state":
            self._json(200, board.state())
        elif (m := _IMAGE.fullmatch(path)) and (png := board.image(m.group(1), m.group(2))) is not None:
            self._send(200, png, "image/png")
        else:
            self._error(404, "not found")

    def do_POST(self) -> None:  # noqa: N802
        path, ok = self._route()
        if not ok:
            self.close_connection = True
            return
        if path != "/api/submit":
            self.close_connection = True
            self._error(404, "not found")
            return
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            self._error(411, "send the submission with a Content-Length")
            return
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self.close_connection = True
            self._error(411, "send the submission with a Content-Length")
            return
        if int(length) > MAX_BODY_BYTES:
            self.close_connection = True  # the body is never read
            self._error(413, f"the submission is larger than {MAX_BODY_BYTES} bytes")
            return
        body = self.rfile.read(int(length))
        try:
            sub = self.server.board.submit(body)
        except SubmissionError as e:
            self._error(e.status, str(e))
            return
        self._json(200, {"ok": True, "good": sum(sub.good), "best": sub.best})


def _static(name: str) -> bytes:
    return resources.files("herobench.harness").joinpath("webui", name).read_bytes()
