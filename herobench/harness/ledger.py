"""The feedback ledger: every label, on disk (fsync) before any method learns from it.

``labels.jsonl`` is append-only; its format (label lines, the commit line, the hash chain that refuses an
edited file) is ``herobench.ledgerfile``'s, which the recorded-labels oracle reads too. One
:meth:`FeedbackLedger.record` call writes one iteration in a single ``write``.

An iteration counts only once its ``iteration`` line is on disk. On resume (:meth:`FeedbackLedger.open`)
label lines after the last commit marker (the process died mid-write) are removed from the file, kept
in a ``<name>.torn`` side file, and reported in :attr:`FeedbackLedger.recovered`; those labels were never
acknowledged, so no method learned from them and they are not charged. The runner opens with
``repair=False``: the tail is cut only when the run records again, so a resume that fails on something
else leaves the file as it was. A malformed line *before* the last commit marker is corruption and
raises, naming the line (``herobench.ledgerfile.parse``).

Budget: one feedback = one image labelled good or bad (HERO §5); the best pick and D3PO pairs are
recorded but not charged (best picks are counted separately in :attr:`n_best_picks`).
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from herobench.errors import BudgetExceededError, HerobenchError
from herobench.harness.runlog import append_durably
from herobench.ledgerfile import RecordedIteration, check_iteration, encode_iteration, parse

log = logging.getLogger(__name__)


class FeedbackLedger:
    """Append-only record of labels with a hard budget.

    ``FeedbackLedger(path, budget)`` starts a new ledger (the file must be absent or empty);
    ``FeedbackLedger.open(path, budget)`` resumes one (or starts it when absent).
    """

    def __init__(self, path: str | Path, budget_labels: int) -> None:
        path = Path(path)
        if path.exists() and path.stat().st_size > 0:
            raise HerobenchError(f"{path} already holds labels; resume it with FeedbackLedger.open")
        self._init(path, budget_labels, {}, 0)

    def _init(
        self, path: Path, budget_labels: int, iterations: dict[int, RecordedIteration], size: int
    ) -> None:
        if isinstance(budget_labels, bool) or not isinstance(budget_labels, int) or budget_labels < 0:
            raise ValueError(f"budget_labels must be an int >= 0, got {budget_labels!r}")
        self.path = path
        self.budget_labels = budget_labels
        self._iterations = iterations
        self._size = size  # bytes of committed content; a failed write is truncated back to this
        self._spent = sum(len(r.entries) for r in iterations.values())
        self._torn_tail = b""  # uncommitted bytes after self._size, until repair()
        self._chain = b""  # chain value of the last committed line (b"" before any, or after an old line)
        self.recovered: str | None = None
        if self._spent > budget_labels:
            raise BudgetExceededError(
                f"{path} already holds {self._spent} labels, more than the budget of {budget_labels}"
            )

    @classmethod
    def open(cls, path: str | Path, budget_labels: int, repair: bool = True) -> FeedbackLedger:
        """Reload an existing ledger (or start one if the file is absent) to resume a run.

        Args:
            repair: move an uncommitted tail (a torn write) to the ``.torn`` side file now. With False
                the file is left untouched until :meth:`repair` or the next :meth:`record`, so a resume
                that fails on something else (a corrupt checkpoint) changes nothing on disk.

        Raises:
            HerobenchError: a malformed or inconsistent line before the last committed iteration
                (names the line), or a schema version this herobench cannot read.
            BudgetExceededError: the file already holds more labels than ``budget_labels``.
        """
        path = Path(path)
        ledger = cls.__new__(cls)
        if not path.exists():
            ledger._init(path, budget_labels, {}, 0)
            return ledger
        data = path.read_bytes()
        parsed = parse(path, data)
        ledger._init(path, budget_labels, parsed.iterations, parsed.committed_end)
        ledger._torn_tail = data[parsed.committed_end:]
        ledger._chain = parsed.chain
        if repair:
            ledger.repair()
        return ledger

    def repair(self) -> None:
        """Move the uncommitted lines after the last commit marker (if any) to ``<name>.torn`` and cut
        them from the ledger; says so in :attr:`recovered`. Idempotent."""
        dropped, self._torn_tail = self._torn_tail, b""
        if not dropped:
            return
        torn = self.path.with_name(self.path.name + ".torn")
        append_durably(torn, dropped if dropped.endswith(b"\n") else dropped + b"\n")
        with self.path.open("r+b") as fh:
            fh.truncate(self._size)
            os.fsync(fh.fileno())
        n_lines = dropped.count(b"\n") + (not dropped.endswith(b"\n"))
        self.recovered = (
            f"{self.path}: removed {n_lines} uncommitted line(s) ({len(dropped)} bytes) after the last "
            f"complete iteration (the process stopped mid-write); kept in {torn}"
        )
        log.warning(self.recovered)

    # ---------------------------------------------------------------------------------------------
    # counts

    @property
    def spent(self) -> int:
        """Labels recorded so far (each labelled image costs one)."""
        return self._spent

    @property
    def remaining(self) -> int:
        return self.budget_labels - self._spent

    @property
    def n_best_picks(self) -> int:
        """Iterations where the rater picked a (new) best image; not charged to the budget."""
        return sum(r.best is not None for r in self._iterations.values())

    @property
    def n_pairs(self) -> int:
        """Total (winner, loser) pairs recorded; derived from labels, not charged."""
        return sum(len(r.pairs) for r in self._iterations.values())

    @property
    def iterations(self) -> list[int]:
        """Committed iteration numbers, ascending."""
        return sorted(self._iterations)

    @property
    def last_iteration(self) -> int | None:
        return max(self._iterations) if self._iterations else None

    # ---------------------------------------------------------------------------------------------
    # replay

    def get(self, iteration: int) -> RecordedIteration | None:
        """The committed record of ``iteration`` (a deep copy), or ``None``."""
        rec = self._iterations.get(iteration)
        return copy.deepcopy(rec) if rec is not None else None

    # ---------------------------------------------------------------------------------------------
    # writing

    def record(
        self,
        iteration: int,
        entries: Sequence[Mapping[str, Any]],
        *,
        best: int | None = None,
        pairs: Sequence[tuple[int, int]] = (),
        scores: Sequence[float] | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        """Write one iteration's labels durably (flush + fsync) before returning.

        Args:
            iteration: > every iteration already recorded.
            entries: one mapping per labelled image, in batch order, with at least ``prompt`` (str),
                ``image_sha256`` (str) and ``good`` (bool); any other JSON fields (seed, noise id,
                oracle reason, …) are kept. ``schema``/``kind``/``iteration``/``index`` are reserved.
            best: batch index of the best pick (must be labelled good), or ``None``.
            pairs: ``(winner, loser)`` indices, winner labelled good and loser bad.
            scores: optional scalar reward per entry.
            meta: optional JSON fields stored on the iteration line (e.g. protocol, rater profile).

        Raises:
            BudgetExceededError: ``spent + len(entries) > budget_labels``; nothing is written.
            ValueError: malformed arguments (a programming error); nothing is written.
        """
        self.repair()
        n = len(entries)
        self._check_next(iteration, n)
        pair_list, score_list = check_iteration(entries, best, pairs, scores)
        best = int(best) if best is not None else None  # (a numpy index is fine, JSON wants an int)
        spent_after = self._spent + n
        payload, chain = encode_iteration(iteration, entries, best=best, pairs=pair_list, scores=score_list,
                                          meta=meta, spent=spent_after, previous_chain=self._chain)
        try:
            append_durably(self.path, payload)
        except BaseException:
            self._truncate_to_committed()
            raise
        self._size += len(payload)
        self._chain = chain
        self._spent = spent_after
        self._iterations[iteration] = RecordedIteration(
            iteration=iteration,
            entries=tuple(copy.deepcopy(dict(e)) for e in entries),
            best=best,
            pairs=tuple(pair_list),
            scores=tuple(score_list) if score_list is not None else None,
            meta=copy.deepcopy(dict(meta or {})),
        )

    def _check_next(self, iteration: int, n: int) -> None:
        """``iteration`` may be recorded next with ``n`` labels (record's Raises)."""
        if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 0:
            raise ValueError(f"iteration must be an int >= 0, got {iteration!r}")
        last = self.last_iteration
        if last is not None and iteration <= last:
            raise ValueError(f"iteration {iteration} is not after the last recorded iteration {last}")
        if self._spent + n > self.budget_labels:
            raise BudgetExceededError(
                f"recording {n} labels would exceed the budget: {self._spent} of {self.budget_labels} "
                f"spent, {self.remaining} remaining"
            )

    def _truncate_to_committed(self) -> None:
        # a failed write (disk full, interrupt) must not leave half an iteration in the file
        try:
            with self.path.open("r+b") as fh:
                fh.truncate(self._size)
        except OSError:
            log.exception("%s: could not remove a partial write; reopen the ledger to repair it", self.path)

