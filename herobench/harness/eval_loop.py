"""A run's evaluation points: held-out noise and prompts, judged by the task's reference oracle, one
``evals.jsonl`` row per prompt set; never charged to the budget (the statistics themselves are
:mod:`herobench.harness.evaluate`'s).

What an evaluation samples depends on the evaluation settings only, never on the run's iteration: the
initial noises come from ``eval.seed + EVAL_SEED_OFFSET`` and each batch's per-step DDIM noise (η > 0)
from :func:`step_generator`, seeded by ``eval.seed`` and the batch's first image. So an untrained method
evaluated at any iteration gives the same images, and two methods' rows are paired image by image
(tests/test_eval_loop.py pins this, and shows that an iteration-dependent seed would be caught).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from herobench.harness.checkpoint_card import write_card
from herobench.harness.evaluate import eval_noise, guard_metrics, per_image, summarise
from herobench.harness.parallel import sample_batch
from herobench.harness.runlog import read_jsonl
from herobench.types import TaskSpec, Verdict

EVAL_SEED_OFFSET = 7_919  # evaluation noise never shares a seed with training noise


def step_generator(eval_seed: int, first_image: int) -> torch.Generator:
    """The per-step noise of the evaluation batch starting at image ``first_image``: a function of the
    evaluation seed and the batch's place only (at η 1 this noise decides verdicts, so it must be the same
    at every evaluation point and for every method)."""
    return torch.Generator().manual_seed(eval_seed + first_image)


def prompt_sets(task: TaskSpec) -> dict[str, list[str]]:
    """The evaluated prompt sets: ``eval``, and ``train`` when the task's train prompts differ."""
    sets = {"eval": list(task.eval_prompts)}
    if list(task.train_prompts) != sets["eval"]:
        sets["train"] = list(task.train_prompts)
    return sets


@torch.no_grad()
def evaluate(run, only: Sequence[str] | None = None) -> list[dict]:
    """Success rate of ``run`` (a :class:`herobench.harness.runner.Run`) on held-out noise and prompts,
    one row per prompt set appended to ``evals.jsonl`` (the main process'; the others sample their share
    and return no rows). ``only``: these prompt sets (a resume completes a point killed between its sets'
    rows); default all."""
    t0 = time.perf_counter()
    es = run.settings.eval
    sets = {k: v for k, v in prompt_sets(run.task).items() if only is None or k in only}
    run.phases.line(f"evaluating at {run.labels_done} labels: {es.n_images} images x {len(sets)} prompt "
                    f"set{'s' if len(sets) > 1 else ''} ({', '.join(sets)})")
    rows = []
    for name, base_prompts in sets.items():
        row = _evaluate_set(run, name, base_prompts)
        if row is None:  # not the main process
            continue
        run.log("eval", run.dir.evals, row)
        rows.append(row)
        run.last_eval = row if name == "eval" else run.last_eval
    if run.main and (run.dir.checkpoints / "latest").is_dir():
        write_card(run, run.dir.checkpoints / "latest")  # the card names this evaluation's success
    run._time("evaluation", t0)
    run.phases.evaluated(time.perf_counter() - t0)
    if rows:
        run.phases.line(f"  at {run.labels_done} labels: success " + ", ".join(
            f"{r['success_rate']:.3f} ({r['prompt_set']})" for r in rows))
    return rows


def _evaluate_set(run, name: str, base_prompts: list[str]) -> dict | None:
    """One prompt set's ``evals.jsonl`` row (None on a process other than the main one, which only
    samples its share)."""
    es = run.settings.eval
    prompts = [base_prompts[i % len(base_prompts)] for i in range(es.n_images)]
    shown = run.method.eval_prompts(prompts, run.task)
    noise = eval_noise(es.n_images, run.gen.latent_shape, es.seed + EVAL_SEED_OFFSET)
    noise = run.method.eval_noise(noise)
    verdicts, images = [], []
    for i in range(0, es.n_images, es.batch_size):
        sl = slice(i, i + es.batch_size)
        ro = sample_batch(run.gen, run.acc, shown[sl], noise[sl], step_generator(es.seed, i))
        # the judge sees the task prompt (what success means), not the enhanced wording
        if run.main:
            verdicts += run.eval_oracle.judge(ro.images, prompts[sl])
            images.append(ro.images.cpu())
    if not run.main:
        return None
    return {"labels": run.labels_done, "iteration": run.iteration, "prompt_set": name,
            **summarise(verdicts), "reasons": _reason_counts(verdicts),
            "per_prompt": _per_prompt_counts(prompts, verdicts), **per_image(verdicts),
            **guard_metrics(torch.cat(images), prompts, verdicts)}


def point_due(run) -> bool:
    """Whether the run's current label count is a point of the evaluation grid: the start, each
    ``every_labels`` crossed by the last iteration, and the end of the budget (as the loop evaluates)."""
    every, done = run.settings.eval.every_labels, run.labels_done
    if run.iteration == 0 or done == run.budget:
        return True
    before = done - len(run.ledger.get(run.iteration).entries)
    return done // every > before // every


def missing_prompt_sets(run) -> list[str]:
    """The prompt sets the current point still lacks a row for (every set is checked, not only "is there
    a row": a kill between the ``eval`` and ``train`` rows of a point must not lose the ``train`` one)."""
    if not point_due(run):
        return []
    rows = read_jsonl(run.dir.evals) if run.dir.evals.exists() else []
    done = {e.get("prompt_set") for e in rows if e.get("labels") == run.labels_done}
    return [name for name in prompt_sets(run.task) if name not in done]


def _per_prompt_counts(prompts: list[str], verdicts: Sequence[Verdict]) -> dict[str, dict[str, int]]:
    """``{prompt: {"n", "successes", "unreadable"}}`` in the prompts' first-seen order: the whole
    per-prompt breakdown (``reasons`` keeps only the 12 most frequent reasons)."""
    out: dict[str, dict[str, int]] = {}
    for prompt, v in zip(prompts, verdicts, strict=True):
        c = out.setdefault(prompt, {"n": 0, "successes": 0, "unreadable": 0})
        c["n"] += 1
        c["successes"] += int(bool(v.success))
        c["unreadable"] += int(not v.readable)
    return out


def _reason_counts(verdicts: Sequence[Verdict]) -> dict[str, int]:
    """The 12 most frequent verdict reasons with their counts, most frequent first."""
    out: dict[str, int] = {}
    for v in verdicts:
        out[v.reason] = out.get(v.reason, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1])[:12])
