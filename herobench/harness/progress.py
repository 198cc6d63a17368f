"""What a run shows while it runs, on stderr: one line per phase (loading, each evaluation, each
iteration's sampling / rating / learning) and a bar over labels whose ETA counts the evaluations still
to come; and its closing summary in words (:func:`closing_summary`). Imports no torch, so the command
line can print its first line before torch loads.

Nothing here changes what a run computes; a disabled :class:`Progress` prints nothing.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

STARTED = time.perf_counter()  # the process' start, near enough: the CLI imports this module first


def eval_points(budget: int, batch: int, every: int, trains: bool = True) -> list[int]:
    """The label counts a run evaluates at (the runner's rule): 0, after each iteration whose labels
    cross a multiple of ``every``, and the end of the budget. Iterations spend ``batch`` labels, the
    last one what is left."""
    if not trains or budget <= 0:
        return [0]
    points, done = [0], 0
    while done < budget:
        before, done = done, min(budget, done + batch)
        if done // every > before // every or done == budget:
            points.append(done)
    return points


def clock(seconds: float) -> str:
    """``"4:05"`` or ``"1:02:03"``."""
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """Phase lines and the label bar of one run (``enabled=False``: silent)."""

    def __init__(self, enabled: bool = True, started: float = STARTED):
        self.enabled = enabled
        self.started = started
        self.bar = None
        self.points: list[int] = []
        self.eval_seconds: list[float] = []  # each evaluation point's seconds (all its prompt sets)
        self.train_seconds = 0.0  # iterations of this process: sampling, rating, learning, checkpoint
        self.train_labels = 0

    def line(self, text: str) -> None:
        """``[  12.3 s] text`` on stderr, above the bar when one is shown."""
        if self.enabled:
            tqdm.write(f"[{time.perf_counter() - self.started:7.1f} s] {text}", file=sys.stderr)

    def evaluated(self, seconds: float) -> None:
        self.eval_seconds.append(seconds)
        self._refresh()

    def start_bar(self, budget: int, done: int, points: list[int], desc: str) -> None:
        """The bar over labels (none for a budget of 0: there is nothing to count)."""
        self.points = points
        if not self.enabled or budget <= 0:
            return
        self.bar = tqdm(total=budget, initial=done, desc=desc, unit="label", file=sys.stderr, dynamic_ncols=True,
                        bar_format="{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} labels [{elapsed}{postfix}]")
        self._refresh()

    def iterated(self, labels: int, seconds: float) -> None:
        """An iteration spent ``labels`` in ``seconds`` (its evaluation not included)."""
        self.train_seconds += seconds
        self.train_labels += labels
        if self.bar is not None:
            self.bar.update(labels)
        self._refresh()

    def eta(self) -> str:
        """``"ETA 3:05 (incl. 4 evaluations)"``: the labels left at this process' seconds per label, plus
        the evaluation points left at their mean measured seconds."""
        if self.bar is None:
            return ""
        done = self.bar.n
        evals_left = sum(1 for p in self.points if p > done)
        evals = f"{evals_left} evaluation{'' if evals_left == 1 else 's'}"
        if self.train_labels == 0 or not self.eval_seconds:
            return f"ETA after the first iteration; {evals} to come"
        per_label = self.train_seconds / self.train_labels
        per_eval = sum(self.eval_seconds) / len(self.eval_seconds)
        left = (self.bar.total - done) * per_label + evals_left * per_eval
        return f"ETA {clock(left)} incl. {evals}"

    def _refresh(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(self.eta(), refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def closing_summary(path: Path, summary: dict) -> str:
    """In words: whether the run moved from its own start (paired on the same evaluation noises:
    McNemar's exact test on the images that changed), and where the curve and run folder are."""
    from herobench.harness.evaluate import successes_of
    from herobench.harness.runlog import read_jsonl
    from herobench.stats import paired

    lines = []
    evals = read_jsonl(path / "evals.jsonl")
    start = {e["prompt_set"]: e for e in evals if e["labels"] == 0}
    end = {e["prompt_set"]: e for e in evals if e["labels"] == summary["labels"]}
    if summary["labels"] == 0:
        lines.append("no labels spent: this is the untrained model's success, nothing to compare it with")
    for name, row in end.items():
        a, b = successes_of(start.get(name, {})), successes_of(row)
        if summary["labels"] == 0 or not a or not b or len(a) != len(b):
            continue
        p = paired(a, b)
        counts = f"{p.gained} images bad->good, {p.lost} good->bad of {p.n}, McNemar exact p = {p.p:.3g}"
        if p.p < 0.05:
            verdict = f"moved: {'better' if p.gained > p.lost else 'worse'} than its start"
        else:
            verdict = "did not move detectably from its start"
        lines.append(f"{name} prompts: {verdict} ({counts})")
    lines.append(f"curve: {_curve(path)}")
    lines.append(f"extend it: herobench run --resume {path} --budget N  (every evaluation: {path / 'evals.jsonl'})")
    return "\n".join(lines)


def _curve(path: Path) -> str:
    """Draw the run's success-vs-labels curve into ``<run>/report/`` (herobench report's own files)."""
    from herobench.errors import HerobenchError
    from herobench.harness.report import write_report

    try:
        written = write_report([path], path / "report", echo=lambda _note: None)  # one run: nothing to select
    except (HerobenchError, OSError, ValueError) as e:
        return f"not drawn ({e}); herobench report {path} draws it"
    pngs = sorted(str(p) for p in written.values() if Path(p).suffix == ".png")
    return ", ".join(pngs) if pngs else f"{path / 'report'} (no plot written)"
