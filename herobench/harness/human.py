"""A real person as the rater: a local web page shows each batch and the run waits for its labels.

``HumanRater.rate(...)`` has the contract of ``SimulatedRater.rate`` (the ``types.Rater`` protocol) and takes the
:class:`~herobench.types.RatingRequest` (the images) that the runner passes to every rater. It publishes
the batch to a small stdlib HTTP server running in a background thread, then blocks until the page
submits a valid labelling; the runner records those labels in the ledger (fsync) before any method
learns from them, then samples and publishes the next batch.

What the person gives, per protocol (as in ``herobench.harness.rater``):

* ``"hero"``: good/bad for every image and a star on the best good image, or no star to keep the previous
  best (HERO §3.1: the best is chosen among the good images *and the previous best*; the person keeps it
  unless they see a better one, which is the rule the simulated rater follows, ``rater.best_pick``). Before
  the first best pick there is nothing to keep, so a batch with a good image needs a star
  (``types.check_best``, the contract both raters obey; ``types.make_feedback`` shapes both raters' feedback).
* ``"d3po"``: good/bad; pairs are derived from the labels and the noise groups exactly as for the
  simulated rater. ``"scalar"``: good/bad as 0/1 rewards. ``"none"``: nothing is asked.

Security (enforced in ``herobench.harness.labelling``): the server binds ``127.0.0.1`` by default; every request needs the random per-rater token
(``?token=`` or the ``X-Herobench-Token`` header; 403 otherwise); the only files served are the page's
three static files and the current batch's images, addressed by batch id and index and encoded from
memory (no filesystem path ever comes from a request, so there is nothing to traverse; anything else is
404); request bodies are capped at :data:`MAX_BODY_BYTES` (413) and a submission is validated completely
before it is accepted (400 with a JSON ``{"error": ...}`` naming the problem, and nothing recorded).

Each labelled image is also kept as a small PNG in ``<store>/images/<sha256>.png``: the page shows the
previous best from there, and the ``recorded-labels`` oracle fits its nearest-neighbour fallback on them.
"""

from __future__ import annotations

import io
import logging
import os
import secrets
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from herobench.core.images import to_pil
from herobench.errors import HerobenchError
from herobench.harness.labelling import MAX_BODY_BYTES, TOKEN_HEADER, Batch, Board, LabellingServer

# one feedback shape for both raters (the D3PO-pair rule and the best-pick contract included)
from herobench.types import (
    FEEDBACK_PROTOCOLS,
    Feedback,
    FeedbackProtocol,
    RatingRequest,
    Verdict,
    check_groups,
    check_protocol,
    make_feedback,
)

__all__ = ["HumanRater", "MAX_BODY_BYTES", "TOKEN_HEADER", "thumbnail_png"]

log = logging.getLogger(__name__)

THUMB_MAX_SIDE = 128  # stored copies: enough for the "previous best" panel and the k-NN features


def thumbnail_png(image_chw) -> bytes:
    """PNG bytes of one ``3×H×W`` image in ``[0, 1]``, shrunk to at most :data:`THUMB_MAX_SIDE` pixels."""
    pil = to_pil(image_chw[None])[0]
    if max(pil.size) > THUMB_MAX_SIDE:
        pil.thumbnail((THUMB_MAX_SIDE, THUMB_MAX_SIDE))
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()


class HumanRater:
    """A person labelling each batch on a local web page (see the module docstring).

    Args:
        store: folder for the labelled images (``<store>/images/<sha256>.png``), e.g. ``<run>/human``.
        host: interface to bind; keep the default ``127.0.0.1`` unless the page must be reached from
            another machine (the token still guards it, but the traffic is plain HTTP).
        port: TCP port; 0 reuses the port this ``store`` was served on before (a resumed run: the browser
            keeps a page's unsubmitted marks per origin, and a new port is a new origin), else a free one.
        token: the URL token; a fresh random one by default.

    Raises:
        HerobenchError: the address cannot be bound (port in use, unknown host).
    """

    PROTOCOLS: tuple[FeedbackProtocol, ...] = FEEDBACK_PROTOCOLS

    def __init__(self, store: str | Path, host: str = "127.0.0.1", port: int = 0, token: str | None = None):
        self.store = Path(store)
        self.token = token or secrets.token_urlsafe(24)
        # (types.Rater) a person compares the pictures, not scores: the page shows the previous best from
        # the ledger's hash (RatingRequest.prev_best_sha256), so there is no score to keep
        self.best_score: float | None = None
        self._board = Board()
        self._counter = 0
        self._server = self._bind(host, int(port))
        if host not in ("127.0.0.1", "localhost", "::1"):
            log.warning("the labelling page listens on %s: anyone who can reach it and has the URL can label", host)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="herobench-labelling", daemon=True)
        self._thread.start()

    def _bind(self, host: str, port: int) -> LabellingServer:
        recorded = self.store / "port"
        if port == 0 and recorded.is_file():
            try:
                server = LabellingServer((host, int(recorded.read_text().strip())), self._board, self.token)
            except (OSError, ValueError, OverflowError):  # taken by now, or unreadable: a free one instead
                server = None
            if server is not None:
                return server
        try:
            server = LabellingServer((host, port), self._board, self.token)
        except OSError as e:
            raise HerobenchError(f"cannot serve the labelling page on {host}:{port} ({e.strerror or e})") from e
        try:
            self.store.mkdir(parents=True, exist_ok=True)
            recorded.write_text(f"{server.server_address[1]}\n")
        except OSError as e:  # the page still works; only a later resume gets another port
            log.warning("cannot record the labelling port in %s (%s)", recorded, e)
        return server

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else host
        return f"http://{shown}:{port}/?token={self.token}"

    def close(self) -> None:
        """Stop serving (idempotent); a ``rate`` call still waiting raises HerobenchError."""
        self._board.close()
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> HumanRater:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def rate(
        self,
        verdicts: Sequence[Verdict] | None,
        protocol: FeedbackProtocol,
        groups: Sequence[int] | None = None,
        rng: np.random.Generator | None = None,
        request: RatingRequest | None = None,
    ) -> Feedback:
        """Show ``request``'s batch on the page and block until the person submits valid labels.

        ``verdicts`` (the runner passes ``None``: no oracle is asked) and ``rng`` are not used: the person
        judges the images. Whether there is a best to keep comes from ``request.prev_best_sha256``.

        Raises:
            ConfigError: unknown protocol.
            ValueError: no ``request`` (the images), inconsistent lengths, or ``groups`` missing for d3po.
        """
        if check_protocol(protocol) == "none":
            return make_feedback(protocol, ())
        if request is None:
            raise ValueError("a human rater needs the images: pass request=RatingRequest(...)")
        n = len(request.images)
        if not n == len(request.prompts) == len(request.image_sha256) or (verdicts and len(verdicts) != n):
            raise ValueError(f"request lengths differ: {n} images, {len(request.prompts)} prompts, "
                             f"{len(request.image_sha256)} hashes, {len(verdicts or ())} verdicts")
        check_groups(protocol, groups, n)  # before the person spends any time on the batch
        batch = self._batch(request, protocol)
        self._board.publish(batch)
        sub = self._board.wait(batch.id)
        self._keep_images(request)
        # the page enforces the same best-pick contract (labelling.parse_submission); this is the shared rule
        return make_feedback(protocol, sub.good, sub.best, groups, has_prev_best=batch.has_prev_best)

    def remember_best(self, feedback: Feedback, scores: Sequence[float] | None) -> None:
        """Nothing to keep (see ``best_score``): the ledger already names the best image."""

    def _batch(self, request: RatingRequest, protocol: FeedbackProtocol) -> Batch:
        """The page's view of one batch, with the previous best's stored picture when there is one."""
        prev = None
        if request.prev_best_sha256 is not None:
            # a best labelled elsewhere (e.g. by another rater before a resume) may have no stored picture
            p = self.store / "images" / f"{request.prev_best_sha256}.png"
            prev = p.read_bytes() if p.is_file() else None
        self._counter += 1
        return Batch(
            id=f"it{request.iteration}-{self._counter}", iteration=request.iteration, protocol=protocol,
            prompts=tuple(request.prompts), pngs=tuple(_png(img) for img in request.images),
            budget_labels=request.budget_labels, labels_spent=request.labels_spent,
            has_prev_best=request.prev_best_sha256 is not None, prev_best_png=prev, task=request.task,
        )

    def _keep_images(self, request: RatingRequest) -> None:
        folder = self.store / "images"
        folder.mkdir(parents=True, exist_ok=True)
        for img, sha in zip(request.images, request.image_sha256):
            path = folder / f"{sha}.png"
            if path.exists():
                continue
            tmp = folder / f".{sha}.tmp"
            tmp.write_bytes(thumbnail_png(img))
            os.replace(tmp, path)


def _png(image_chw) -> bytes:
    """Full-resolution PNG bytes of one ``3×H×W`` image in ``[0, 1]``."""
    buf = io.BytesIO()
    to_pil(image_chw[None])[0].save(buf, format="PNG")
    return buf.getvalue()
