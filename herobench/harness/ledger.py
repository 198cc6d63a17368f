"""The feedback ledger: every label, on disk (fsync) before any method learns from it.

``labels.jsonl`` is append-only. One :meth:`FeedbackLedger.record` call writes, in a single ``write``:

* one ``label`` line per labelled image::

    {"schema": 1, "kind": "label", "iteration": 3, "index": 0, "prompt": "1 hand",
     "image_sha256": "…", "good": true, ...caller's fields (noise id, seed, reason, …)}

* then one ``iteration`` line, the commit marker of the iteration::

    {"schema": 1, "kind": "iteration", "iteration": 3, "n_labels": 64, "spent": 256,
     "best": 12, "pairs": [[0, 5], …], "scores": null, "meta": {}, "time": 1732612345.1}

Every line ends with ``"chain": "<sha256 hex>"``, a hash chain: the SHA-256 of the previous line's chain
value (``""`` for the first line, or after a line without one) followed by the line's own bytes without
the ``, "chain": ...`` suffix (the commit line's wall-clock ``time`` follows the chain value and is
left out, so two runs that record the same labels write the same chain). A ledger edited by hand (a label flipped, a line removed or moved) is
refused, naming the first line whose chain does not hold, instead of being replayed. Ledgers written before
the chain existed have no ``chain`` fields and load as before; once a line carries one, every later line
must (a run resumed on an old ledger starts the chain at its first new line).

An iteration counts only once its ``iteration`` line is on disk. On resume (:meth:`FeedbackLedger.open`)
label lines after the last commit marker (the process died mid-write) are removed from the file, kept
in a ``<name>.torn`` side file, and reported in :attr:`FeedbackLedger.recovered`; those labels were never
acknowledged, so no method learned from them and they are not charged. The runner opens with
``repair=False``: the tail is cut only when the run records again, so a resume that fails on something
else leaves the file as it was. A malformed line *before* the last commit marker is corruption and
raises, naming the line; so does a committed line that :meth:`FeedbackLedger.record` would not have
written (``good`` not a bool, a pair that is not two (good, bad) indices, ...).

Budget: one feedback = one image labelled good or bad (HERO §5); the best pick and D3PO pairs are
recorded but not charged (best picks are counted separately in :attr:`n_best_picks`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import numbers
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from herobench.errors import BudgetExceededError, HerobenchError
from herobench.harness.runlog import append_durably
from herobench.types import Feedback

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_RESERVED = frozenset({"schema", "kind", "iteration", "index", "chain"})
_CHAIN = re.compile(rb'^(.*), "chain": "([0-9a-f]{64})"(?:, "time": [0-9eE.+-]+)?\}$', re.DOTALL)
_REQUIRED = {"prompt": str, "image_sha256": str, "good": bool}


@dataclass(frozen=True)
class RecordedIteration:
    """One committed iteration as read back from the ledger."""

    iteration: int
    entries: tuple[dict[str, Any], ...]
    best: int | None
    pairs: tuple[tuple[int, int], ...]
    scores: tuple[float, ...] | None
    meta: dict[str, Any] = field(default_factory=dict)

    def feedback(self) -> Feedback:
        return Feedback(
            good=tuple(bool(e["good"]) for e in self.entries),
            best=self.best,
            pairs=self.pairs,
            scores=self.scores,
        )


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
        iterations, committed_end, chain = _parse_chained(path, data)
        ledger._init(path, budget_labels, iterations, committed_end)
        ledger._torn_tail = data[committed_end:]
        ledger._chain = chain
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

    def entries_for(self, iteration: int) -> list[dict[str, Any]] | None:
        """The label entries recorded for ``iteration`` (as given to :meth:`record`), or ``None`` when
        that iteration was not recorded. A resumed run replays these instead of asking again."""
        rec = self.get(iteration)
        return list(rec.entries) if rec is not None else None

    def feedback_for(self, iteration: int) -> Feedback | None:
        """The :class:`Feedback` recorded for ``iteration`` (good, best, pairs, scores), or ``None``."""
        rec = self._iterations.get(iteration)
        return rec.feedback() if rec is not None else None

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
        pair_list, score_list = _check_iteration(entries, best, pairs, scores)
        best = int(best) if best is not None else None  # (a numpy index is fine, JSON wants an int)

        spent_after = self._spent + n
        lines = [
            {"schema": SCHEMA_VERSION, "kind": "label", "iteration": iteration, "index": i, **entry}
            for i, entry in enumerate(entries)
        ]
        lines.append(
            {
                "schema": SCHEMA_VERSION,
                "kind": "iteration",
                "iteration": iteration,
                "n_labels": n,
                "spent": spent_after,
                "best": best,
                "pairs": [list(p) for p in pair_list],
                "scores": score_list,
                "meta": dict(meta or {}),
                "time": time.time(),
            }
        )
        try:
            texts = [json.dumps(_unstamped(line), ensure_ascii=False, allow_nan=False).encode() for line in lines]
        except (TypeError, ValueError) as e:
            raise ValueError(f"ledger entries must be JSON-serialisable (finite numbers): {e}") from None
        chain, chained = self._chain, []
        for line, text in zip(lines, texts):
            chain = _chain_value(chain, text)
            stamp = b', "time": ' + json.dumps(line["time"]).encode() if line["kind"] == "iteration" else b""
            chained.append(text[:-1] + b', "chain": "' + chain + b'"' + stamp + b'}\n')
        payload = b"".join(chained)
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

    def _truncate_to_committed(self) -> None:
        # a failed write (disk full, interrupt) must not leave half an iteration in the file
        try:
            with self.path.open("r+b") as fh:
                fh.truncate(self._size)
        except OSError:
            log.exception("%s: could not remove a partial write; reopen the ledger to repair it", self.path)


def _check_iteration(
    entries: Sequence[Any], best: Any, pairs: Any, scores: Any
) -> tuple[list[tuple[int, int]], list[float] | None]:
    """Check one iteration's labels, best pick, pairs and scores (as :meth:`FeedbackLedger.record`
    documents them); returns the pairs and scores normalised. Raises ValueError naming the problem."""
    n = len(entries)
    for i, entry in enumerate(entries):
        _check_entry(entry, i)
    goods = [entry["good"] for entry in entries]
    if best is not None:
        if isinstance(best, bool) or not (isinstance(best, numbers.Integral) and 0 <= best < n):
            raise ValueError(f"best must be an index in [0, {n}), got {best!r}")
        if not goods[best]:
            raise ValueError(f"best pick {best} is not labelled good")
    pair_list = []
    for pair in pairs:
        if (not isinstance(pair, Sequence) or isinstance(pair, str) or len(pair) != 2
                or not all(isinstance(x, numbers.Integral) and not isinstance(x, bool) for x in pair)):
            raise ValueError(f"a pair must be two batch indices (winner, loser), got {pair!r}")
        w, b = int(pair[0]), int(pair[1])
        if not (0 <= w < n and 0 <= b < n) or not goods[w] or goods[b]:
            raise ValueError(f"pair ({w}, {b}) must be (good, bad) indices of this batch")
        pair_list.append((w, b))
    score_list = None
    if scores is not None:
        try:  # a list, an array or a tensor of numbers (not a string, a mapping or booleans)
            if isinstance(scores, str | bytes | Mapping) or any(isinstance(x, bool | str | bytes) for x in scores):
                raise TypeError
            score_list = [float(x) for x in scores]
        except (TypeError, ValueError):
            raise ValueError(f"scores must be a list of numbers, got {scores!r}") from None
        if len(score_list) != n:
            raise ValueError(f"got {len(score_list)} scores for {n} entries")
    return pair_list, score_list


def _check_entry(entry: Any, i: int) -> None:
    if not isinstance(entry, Mapping):
        raise ValueError(f"entry {i} must be a mapping, got {type(entry).__name__}")
    for key, tp in _REQUIRED.items():
        if not isinstance(entry.get(key), tp):
            raise ValueError(f"entry {i} needs '{key}' ({tp.__name__}), got {entry.get(key)!r}")
    reserved = _RESERVED.intersection(entry)
    if reserved:
        raise ValueError(f"entry {i} uses reserved key(s) {sorted(reserved)}")


def _unstamped(line: dict[str, Any]) -> dict[str, Any]:
    """The part of a line the chain covers: all of it but a commit line's ``time``."""
    return {k: v for k, v in line.items() if not (k == "time" and line["kind"] == "iteration")}


def _chain_value(previous: bytes, text: bytes) -> bytes:
    """The chain value of a line whose bytes without the chain suffix are ``text`` (module docstring)."""
    return hashlib.sha256(previous + b"\n" + text).hexdigest().encode()


def _parse(path: Path, data: bytes) -> tuple[dict[int, RecordedIteration], int]:
    """Committed iterations of a ledger file and the byte offset where the committed part ends."""
    iterations, committed_end, _ = _parse_chained(path, data)
    return iterations, committed_end


def _parse_chained(path: Path, data: bytes) -> tuple[dict[int, RecordedIteration], int, bytes]:
    """:func:`_parse`, and the chain value of the last committed line.

    A broken chain is reported only once the rest of the file has been checked, so an edit that also
    breaks a rule of :meth:`FeedbackLedger.record` is named by that rule (the more useful message)."""
    iterations: dict[int, RecordedIteration] = {}
    committed_end = 0
    chain, committed_chain, chained_before = b"", b"", False
    broken: str | None = None  # the first line whose chain does not hold
    pending: list[tuple[int, dict[str, Any]]] = []  # (line number, label line)
    first_bad: str | None = None  # a malformed line is only fatal if a commit marker follows it
    pos, number = 0, 0
    while True:
        nl = data.find(b"\n", pos)
        if nl < 0:
            break  # bytes after the last newline: a torn write
        raw, pos = data[pos:nl], nl + 1
        number += 1
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
            if not isinstance(obj, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            first_bad = first_bad or f"{path}: line {number} is malformed ({str(e)[:200]})"
            continue
        where = f"{path}: line {number}"
        chain, problem = _check_chain(raw, obj, chain, chained_before)
        chained_before = chained_before or "chain" in obj
        if problem and broken is None:
            broken = (f"{where} {problem}: the ledger was edited after it was written; refusing to replay it "
                      "(restore the original file)")
        if obj.get("schema") != SCHEMA_VERSION:
            raise HerobenchError(
                f"{where}: ledger schema version {obj.get('schema')!r} is not supported "
                f"(this herobench reads version {SCHEMA_VERSION})"
            )
        kind = obj.get("kind")
        if kind == "label":
            if first_bad is None:
                pending.append((number, obj))
            continue
        if kind != "iteration":
            raise HerobenchError(f"{where}: unknown record kind {kind!r}")
        if first_bad is not None:
            raise HerobenchError(first_bad)
        it = obj.get("iteration")
        if not isinstance(it, int) or (iterations and it <= max(iterations)):
            raise HerobenchError(f"{where}: iteration {it!r} is not after the previous one")
        if obj.get("n_labels") != len(pending) or any(
            p.get("iteration") != it or p.get("index") != j for j, (_, p) in enumerate(pending)
        ):
            raise HerobenchError(
                f"{where}: iteration {it} commits {obj.get('n_labels')!r} labels but the label lines "
                f"before it do not match ({len(pending)} pending)"
            )
        entries = tuple({k: v for k, v in p.items() if k not in _RESERVED} for _, p in pending)
        for j, (label_number, _) in enumerate(pending):
            try:
                _check_entry(entries[j], j)
            except ValueError as e:
                raise HerobenchError(f"{path}: line {label_number} is not a valid label ({e})") from None
        try:
            pairs, scores = _check_iteration(entries, obj.get("best"), obj.get("pairs") or [], obj.get("scores"))
        except ValueError as e:
            raise HerobenchError(f"{where}: iteration {it} is not valid ({e})") from None
        meta = obj.get("meta") or {}
        if not isinstance(meta, dict):
            raise HerobenchError(f"{where}: iteration {it} is not valid (meta must be an object, got {meta!r})")
        iterations[it] = RecordedIteration(
            iteration=it,
            entries=entries,
            best=obj.get("best"),
            pairs=tuple(pairs),
            scores=tuple(scores) if scores is not None else None,
            meta=meta,
        )
        pending = []
        committed_end = pos
        committed_chain = chain
    if broken is not None:
        raise HerobenchError(broken)
    return iterations, committed_end, committed_chain


def _check_chain(raw: bytes, obj: dict, previous: bytes, chained_before: bool) -> tuple[bytes, str | None]:
    """The chain value after the line ``raw`` (parsed: ``obj``) and what is wrong with it, if anything."""
    if "chain" not in obj:
        return b"", ("has no chain value after lines that have one" if chained_before else None)
    m = _CHAIN.match(raw.rstrip(b"\r"))
    if m is None:
        return b"", "has a malformed chain value"
    if _chain_value(previous, m.group(1) + b"}") != m.group(2):
        return m.group(2), "does not match its chain value"
    return m.group(2), None
