"""The feedback ledger's file format, ``labels.jsonl``: how an iteration's labels are encoded and how a file
is read back and checked. The ledger (``herobench.harness.ledger``) writes it durably and keeps the budget;
the recorded-labels oracle (``herobench.oracles.recorded``) replays it; both go through this module, so a
log is read with the same validation everywhere.

One iteration is, in a single write:

* one ``label`` line per labelled image::

    {"schema": 1, "kind": "label", "iteration": 3, "index": 0, "prompt": "1 hand",
     "image_sha256": "…", "good": true, ...caller's fields (noise id, seed, reason, …)}

* then one ``iteration`` line, the commit marker of the iteration::

    {"schema": 1, "kind": "iteration", "iteration": 3, "n_labels": 64, "spent": 256,
     "best": 12, "pairs": [[0, 5], …], "scores": null, "meta": {}, "time": 1732612345.1}

Every line ends with ``"chain": "<sha256 hex>"``, a hash chain: the SHA-256 of the previous line's chain
value (``""`` for the first line, or after a line without one) followed by the line's own bytes without
the ``, "chain": ...`` suffix (the commit line's wall-clock ``time`` follows the chain value and is left
out, so two runs that record the same labels write the same chain). A ledger edited by hand (a label
flipped, a line removed or moved) is refused, naming the first line whose chain does not hold, instead of
being replayed. Ledgers written before the chain existed have no ``chain`` fields and load as before; once
a line carries one, every later line must (a run resumed on an old ledger starts the chain at its first
new line).

An iteration counts only once its ``iteration`` line is on disk: :func:`parse` returns the committed
iterations and the byte offset where they end (what follows is a torn write). A malformed line *before*
the last commit marker is corruption and raises, naming the line; so does a committed line that
:func:`encode_iteration` would not have written (``good`` not a bool, a pair that is not two (good, bad)
indices, ...).
"""

from __future__ import annotations

import hashlib
import json
import numbers
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from herobench.errors import HerobenchError
from herobench.types import Feedback

SCHEMA_VERSION = 1
# keys the format owns on a label line; a caller's entry may not use them
RESERVED_KEYS = frozenset({"schema", "kind", "iteration", "index", "chain"})
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


@dataclass(frozen=True)
class ParsedLedger:
    """What :func:`parse` reads from a ledger file."""

    iterations: dict[int, RecordedIteration]
    committed_end: int  # byte offset where the committed part ends (a torn write may follow)
    chain: bytes  # chain value of the last committed line (b"" when none, or after an unchained line)


# ------------------------------------------------------------------------------------------------- checks


def check_iteration(
    entries: Sequence[Any], best: Any, pairs: Any, scores: Any
) -> tuple[list[tuple[int, int]], list[float] | None]:
    """Check one iteration's labels, best pick, pairs and scores (as ``FeedbackLedger.record`` documents
    them); returns the pairs and scores normalised. Raises ValueError naming the problem."""
    n = len(entries)
    for i, entry in enumerate(entries):
        check_entry(entry, i)
    goods = [entry["good"] for entry in entries]
    if best is not None:
        if isinstance(best, bool) or not (isinstance(best, numbers.Integral) and 0 <= best < n):
            raise ValueError(f"best must be an index in [0, {n}), got {best!r}")
        if not goods[best]:
            raise ValueError(f"best pick {best} is not labelled good")
    return [_check_pair(pair, goods) for pair in pairs], _check_scores(scores, n)


def _check_pair(pair: Any, goods: list[bool]) -> tuple[int, int]:
    if (not isinstance(pair, Sequence) or isinstance(pair, str) or len(pair) != 2
            or not all(isinstance(x, numbers.Integral) and not isinstance(x, bool) for x in pair)):
        raise ValueError(f"a pair must be two batch indices (winner, loser), got {pair!r}")
    w, b = int(pair[0]), int(pair[1])
    n = len(goods)
    if not (0 <= w < n and 0 <= b < n) or not goods[w] or goods[b]:
        raise ValueError(f"pair ({w}, {b}) must be (good, bad) indices of this batch")
    return w, b


def _check_scores(scores: Any, n: int) -> list[float] | None:
    if scores is None:
        return None
    try:  # a list, an array or a tensor of numbers (not a string, a mapping or booleans)
        if isinstance(scores, str | bytes | Mapping) or any(isinstance(x, bool | str | bytes) for x in scores):
            raise TypeError
        score_list = [float(x) for x in scores]
    except (TypeError, ValueError):
        raise ValueError(f"scores must be a list of numbers, got {scores!r}") from None
    if len(score_list) != n:
        raise ValueError(f"got {len(score_list)} scores for {n} entries")
    return score_list


def check_entry(entry: Any, i: int) -> None:
    """One label entry: a mapping with ``prompt``, ``image_sha256`` and ``good``, no reserved key."""
    if not isinstance(entry, Mapping):
        raise ValueError(f"entry {i} must be a mapping, got {type(entry).__name__}")
    for key, tp in _REQUIRED.items():
        if not isinstance(entry.get(key), tp):
            raise ValueError(f"entry {i} needs '{key}' ({tp.__name__}), got {entry.get(key)!r}")
    reserved = RESERVED_KEYS.intersection(entry)
    if reserved:
        raise ValueError(f"entry {i} uses reserved key(s) {sorted(reserved)}")


# ------------------------------------------------------------------------------------------------ writing


def encode_iteration(
    iteration: int,
    entries: Sequence[Mapping[str, Any]],
    *,
    best: int | None,
    pairs: Sequence[tuple[int, int]],
    scores: list[float] | None,
    meta: Mapping[str, Any] | None,
    spent: int,
    previous_chain: bytes,
) -> tuple[bytes, bytes]:
    """The bytes of one iteration (its label lines and commit line, already checked by
    :func:`check_iteration`) and the chain value of its last line. ``spent``: labels spent after it.

    Raises:
        ValueError: an entry or ``meta`` is not JSON-serialisable (or holds a non-finite number).
    """
    lines = [
        {"schema": SCHEMA_VERSION, "kind": "label", "iteration": iteration, "index": i, **entry}
        for i, entry in enumerate(entries)
    ]
    lines.append(
        {
            "schema": SCHEMA_VERSION,
            "kind": "iteration",
            "iteration": iteration,
            "n_labels": len(entries),
            "spent": spent,
            "best": best,
            "pairs": [list(p) for p in pairs],
            "scores": scores,
            "meta": dict(meta or {}),
            "time": time.time(),
        }
    )
    try:
        texts = [json.dumps(_unstamped(line), ensure_ascii=False, allow_nan=False).encode() for line in lines]
    except (TypeError, ValueError) as e:
        raise ValueError(f"ledger entries must be JSON-serialisable (finite numbers): {e}") from None
    chain, chained = previous_chain, []
    for line, text in zip(lines, texts):
        chain = _chain_value(chain, text)
        stamp = b', "time": ' + json.dumps(line["time"]).encode() if line["kind"] == "iteration" else b""
        chained.append(text[:-1] + b', "chain": "' + chain + b'"' + stamp + b'}\n')
    return b"".join(chained), chain


def _unstamped(line: dict[str, Any]) -> dict[str, Any]:
    """The part of a line the chain covers: all of it but a commit line's ``time``."""
    return {k: v for k, v in line.items() if not (k == "time" and line["kind"] == "iteration")}


def _chain_value(previous: bytes, text: bytes) -> bytes:
    """The chain value of a line whose bytes without the chain suffix are ``text`` (module docstring)."""
    return hashlib.sha256(previous + b"\n" + text).hexdigest().encode()


# ------------------------------------------------------------------------------------------------ reading


def parse(path: Path, data: bytes) -> ParsedLedger:
    """The committed iterations of a ledger file's bytes ``data`` (``path`` names it in messages).

    A broken chain is reported only once the rest of the file has been checked, so an edit that also
    breaks a rule of :func:`check_iteration` is named by that rule (the more useful message).

    Raises:
        HerobenchError: a malformed or inconsistent line before the last commit marker, an unknown schema
            version or record kind, or a broken chain (each names the line).
    """
    iterations: dict[int, RecordedIteration] = {}
    committed_end, committed_chain = 0, b""
    chain, chained_before = b"", False
    broken: str | None = None  # the first line whose chain does not hold
    pending: list[tuple[int, dict[str, Any]]] = []  # (line number, label line)
    first_bad: str | None = None  # a malformed line is only fatal if a commit marker follows it
    for number, raw, end in _lines(data):
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
        if _record_kind(obj, where) == "label":
            if first_bad is None:
                pending.append((number, obj))
            continue
        if first_bad is not None:
            raise HerobenchError(first_bad)
        rec = _committed(path, where, obj, pending, iterations)
        iterations[rec.iteration] = rec
        pending = []
        committed_end, committed_chain = end, chain
    if broken is not None:
        raise HerobenchError(broken)
    return ParsedLedger(iterations, committed_end, committed_chain)


def _lines(data: bytes) -> Iterator[tuple[int, bytes, int]]:
    """``(line number, bytes, offset after its newline)`` of each non-blank line that ends in a newline
    (bytes after the last newline are a torn write and are not a line)."""
    pos, number = 0, 0
    while True:
        nl = data.find(b"\n", pos)
        if nl < 0:
            return
        raw, pos = data[pos:nl], nl + 1
        number += 1
        if raw.strip():
            yield number, raw, pos


def _record_kind(obj: dict, where: str) -> str:
    """``"label"`` or ``"iteration"``; any other kind, or another schema version, raises."""
    if obj.get("schema") != SCHEMA_VERSION:
        raise HerobenchError(
            f"{where}: ledger schema version {obj.get('schema')!r} is not supported "
            f"(this herobench reads version {SCHEMA_VERSION})"
        )
    kind = obj.get("kind")
    if kind not in ("label", "iteration"):
        raise HerobenchError(f"{where}: unknown record kind {kind!r}")
    return kind


def _committed(path: Path, where: str, obj: dict, pending: list[tuple[int, dict[str, Any]]],
               iterations: dict[int, RecordedIteration]) -> RecordedIteration:
    """The iteration a commit line ``obj`` closes, with the ``pending`` label lines before it, checked."""
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
    entries = tuple({k: v for k, v in p.items() if k not in RESERVED_KEYS} for _, p in pending)
    for j, (label_number, _) in enumerate(pending):
        try:
            check_entry(entries[j], j)
        except ValueError as e:
            raise HerobenchError(f"{path}: line {label_number} is not a valid label ({e})") from None
    try:
        pairs, scores = check_iteration(entries, obj.get("best"), obj.get("pairs") or [], obj.get("scores"))
    except ValueError as e:
        raise HerobenchError(f"{where}: iteration {it} is not valid ({e})") from None
    meta = obj.get("meta") or {}
    if not isinstance(meta, dict):
        raise HerobenchError(f"{where}: iteration {it} is not valid (meta must be an object, got {meta!r})")
    return RecordedIteration(
        iteration=it,
        entries=entries,
        best=obj.get("best"),
        pairs=tuple(pairs),
        scores=tuple(scores) if scores is not None else None,
        meta=meta,
    )


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
