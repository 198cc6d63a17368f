"""The labelling page's server: what a browser may ask for and what a submission must look like.

Used by ``herobench.harness.human.HumanRater`` (the run's side). The server is stdlib ``http.server`` in a
background thread; the page (``webui/``) polls ``/api/state``, loads ``/api/image/<batch>/<i>.png`` and
posts ``/api/submit``. See ``herobench.harness.human`` for the security model; everything is enforced here.

Robustness: the listen backlog holds :data:`LISTEN_BACKLOG` pending connections (socketserver's default of 5
reset a person's submit while other tabs polled); every malformed request -- a bad ``Content-Length``, JSON
that Python cannot read (a 5000-digit integer, nesting deeper than the parser's stack), a body shorter than
announced -- is answered with a 4xx and a JSON message, never a traceback in the run's terminal. A
request whose ``Host`` is not a name of the served address (DNS rebinding) or whose ``Origin`` is not the
page's own is refused before the token is even looked at.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import re
import socket
import threading
from dataclasses import dataclass
from functools import cached_property
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from herobench.errors import HerobenchError

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024  # a labelling of 64 images is < 1 KiB of JSON
LISTEN_BACKLOG = 512  # pending connections the kernel queues (200 polling tabs + submits; capped by somaxconn)
_LENGTH = re.compile(r"[0-9]{1,12}")  # ASCII digits only: int() also reads "١٢" and "²" fails it
TOKEN_HEADER = "X-Herobench-Token"
_STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/app.css": ("app.css", "text/css; charset=utf-8"),
}
_IMAGE = re.compile(r"/api/image/([A-Za-z0-9-]{1,40})/([0-9]{1,5}|best)\.png")
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

    @cached_property
    def store_key(self) -> str:
        """The page's browser-storage key for marks made on this batch: the same for the same batch
        of the same run after a crash and resume (the replayed batch has the same pictures), another
        for any other batch, and never the URL's token (which a resumed run replaces)."""
        h = hashlib.sha256(f"{self.task}\n{self.iteration}\n{self.protocol}\n".encode())
        for prompt, png in zip(self.prompts, self.pngs):
            h.update(hashlib.sha256(prompt.encode()).digest() + hashlib.sha256(png).digest())
        return "herobench:marks:" + h.hexdigest()[:32]

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
            "star": self.protocol == "hero", "needs_best": self.needs_best, "store_key": self.store_key,
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
    except (ValueError, RecursionError) as e:  # (UnicodeDecodeError, JSONDecodeError, a 5000-digit integer)
        raise SubmissionError(400, f"the submission is not valid JSON ({str(e)[:120]})") from None
    if not isinstance(obj, dict):
        raise SubmissionError(400, "the submission must be a JSON object")
    keys = set(obj)
    if keys - {"batch", "good", "best"} or not {"batch", "good"} <= keys:
        raise SubmissionError(400, f"the submission needs keys batch, good (and best); got {sorted(keys)}")
    if obj["batch"] != batch.id:
        shown = obj["batch"] if isinstance(obj["batch"], str) else type(obj["batch"]).__name__
        raise SubmissionError(409, f"this submission is for batch {shown[:60]!r}, the current one is "
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
            shown = repr(best) if len(repr(best)) <= 40 else repr(best)[:37] + "..."
            raise SubmissionError(400, f"'best' must be an image index in [0, {n}) or null, got {shown}")
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
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, address, board: Board, token: str) -> None:
        super().__init__(address, _Handler)
        self.board = board
        self.token = token
        self.host_names = _host_names(self.server_address[0])

    def handle_error(self, request, client_address) -> None:  # noqa: ANN001 - stdlib signature
        # socketserver prints a traceback to stderr (the run's terminal); a client that vanished or sent
        # garbage is no error of the run's
        log.debug("labelling page: request from %s failed", client_address, exc_info=True)


_LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "127.0.0.1", "::1"})


def _host_names(bound: str) -> frozenset[str] | None:
    """The host names a request's ``Host`` header may carry for a server bound to ``bound``, lower case
    (the port is not checked: an SSH tunnel may forward another local port); None for a wildcard bind,
    which answers to whatever name reaches the machine."""
    ip = ipaddress.ip_address(bound.split("%")[0])
    if ip.is_unspecified:
        return None
    if ip.is_loopback:
        return _LOOPBACK_NAMES | {str(ip)}
    names = {str(ip), socket.gethostname().lower(), socket.getfqdn().lower()}
    return frozenset(names)


def _split_host(value: str) -> str | None:
    """The host name of a ``Host`` header or an origin's authority (``[::1]:8080`` -> ``::1``), lower case;
    None when it is not of that form."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        rest = value[end + 1:]
        if end < 0 or (rest and not re.fullmatch(r":[0-9]{1,5}", rest)):
            return None
        return value[1:end]
    host, sep, port = value.rpartition(":") if value.count(":") == 1 else (value, "", "")
    if sep and not re.fullmatch(r"[0-9]{1,5}", port):
        return None
    return host or None


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

    def _foreign(self) -> str | None:
        """Why the request does not come from the page this server serves, or None. ``Host`` must be a name
        of the bound address (a DNS-rebinding page reaches 127.0.0.1 under its own name); ``Origin``, when
        a browser sends one, must be the origin of that same ``Host`` (another site's form or script)."""
        host = self.headers.get("Host")
        names = self.server.host_names
        if host is not None and names is not None and _split_host(host) not in names:
            return "this page answers only to the address the run printed (wrong Host header)"
        origin = self.headers.get("Origin")
        if origin is not None:
            expected = f"http://{host.strip().lower()}" if host is not None else None
            if origin.strip().lower() != expected:
                return "requests from other sites are refused (wrong Origin header)"
        return None

    def _route(self) -> tuple[str, bool]:
        # the raw request target, split by hand: no URL library turns "//x" into a host or decodes "%2e"
        path, _, query = self.path.partition("?")
        foreign = self._foreign()
        if foreign is not None:
            self._error(403, foreign)
            return path, False
        if not self._authorised(query):
            self._error(403, "missing or wrong token: open the URL the run printed (it ends with ?token=...)")
            return path, False
        return path, True

    # ---------------------------------------------------------------- methods
    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self._guarded(self._get)

    def do_POST(self) -> None:  # noqa: N802
        self._guarded(self._post)

    def _guarded(self, handle) -> None:  # noqa: ANN001
        """Run ``handle``; anything it did not foresee is a malformed request (400), logged, not printed."""
        try:
            handle()
        except (ConnectionError, TimeoutError) as e:  # the client left, or stalled past the timeout
            self.close_connection = True
            log.debug("labelling page: %s", e)
        except Exception:  # noqa: BLE001 - one client's garbage must not reach the run's terminal
            self.close_connection = True
            log.debug("labelling page: malformed request %r", self.requestline[:200], exc_info=True)
            try:
                self._error(400, "malformed request")
            except OSError:
                pass

    def _get(self) -> None:
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

    def _post(self) -> None:
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
        if length is None:
            self.close_connection = True
            self._error(411, "send the submission with a Content-Length")
            return
        if not _LENGTH.fullmatch(length.strip()):
            self.close_connection = True
            self._error(400, "Content-Length must be a number of bytes (ASCII digits)")
            return
        if int(length) > MAX_BODY_BYTES:
            self.close_connection = True  # the body is never read
            self._error(413, f"the submission is larger than {MAX_BODY_BYTES} bytes")
            return
        body = self.rfile.read(int(length))
        if len(body) < int(length):  # the client closed early
            self.close_connection = True
            self._error(400, f"the submission ended after {len(body)} of {length.strip()} bytes")
            return
        try:
            sub = self.server.board.submit(body)
        except SubmissionError as e:
            self._error(e.status, str(e))
            return
        self._json(200, {"ok": True, "good": sum(sub.good), "best": sub.best})


def _static(name: str) -> bytes:
    return resources.files("herobench.harness").joinpath("webui", name).read_bytes()
