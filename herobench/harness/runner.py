"""The loop. The harness owns sampling, rating, the feedback ledger, evaluation and checkpoints;
methods only learn (see docs/ARCHITECTURE.md).

Determinism and resume: every iteration draws its randomness from generators seeded by
``(seed, iteration)``, so a run resumed from the checkpoint of iteration k replays iteration k + 1
exactly. Labels recorded in the ledger for an iteration that had not been checkpointed yet are
*replayed* from the ledger on resume — a label is never asked for twice. A resume also checks that the
ledger commits exactly the iterations the checkpoint learned from (plus at most the next one); an edited
or truncated ledger is refused with one line and nothing on disk changes. A resume completes the
evaluation point it lands on prompt set by prompt set (a kill between a point's ``eval`` and ``train``
rows loses neither), drops ``train.jsonl`` rows of iterations the checkpoint had not learned (they are
redone), and adds its time to the earlier processes' (``summary.json``). tests/test_reliability_resume.py
kills a run at 20 random file-system moments and checks all of this against an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from herobench.config import RunSettings, to_dict
from herobench.core.generator import Generator, SamplerConfig
from herobench.core.images import sha256_of_image
from herobench.core.lora import load_lora, save_lora
from herobench.core.pipeline import check_device, check_model_folder, load_components
from herobench.core.policy_gradient import process_share, process_shares
from herobench.errors import FileSystemError, HerobenchError, errno_in_text
from herobench.harness.checkpoint_card import write_card
from herobench.harness.evaluate import eval_noise, guard_metrics, per_image, summarise
from herobench.harness.ledger import FeedbackLedger
from herobench.harness.progress import Progress, eval_points
from herobench.harness.rater import SimulatedRater
from herobench.harness.runlog import (
    RunDir,
    append_jsonl,
    environment_info,
    read_jsonl,
    run_dir_name,
    write_bytes,
    write_json_atomic,
    write_text_atomic,
)
from herobench.methods import METHODS
from herobench.modelcard import model_card, resolve_model
from herobench.oracles import ORACLES, make_oracle
from herobench.tasks import for_backend, load_task, resolve_profile
from herobench.types import Feedback, RatingRequest, Rollout, TaskSpec

EVAL_SEED_OFFSET = 7_919  # evaluation noise never shares a seed with training noise


def _rng(seed: int, iteration: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + iteration * 101 + stream) % (2**63))


def _accelerator(device: str):
    """An ``Accelerator`` when launched as several processes (``accelerate launch --multi_gpu
    --num_processes N``; on a machine without CUDA, or with ``device = "cpu"``, they join over gloo),
    else None: one process runs exactly as without accelerate."""
    if int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return None
    from accelerate import Accelerator

    return Accelerator(cpu=torch.device(device).type == "cpu" or not torch.cuda.is_available())


def _from_main(obj, acc):
    """``obj`` as the main process has it, on every process (unchanged with one process)."""
    if acc is None:
        return obj
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([obj])[0]


def _gather_rows(x: torch.Tensor, n: int, acc) -> torch.Tensor:
    """The ``n`` rows of a batch from each process' ``process_share`` of them, on every process."""
    sizes = [len(share) for share in process_shares(n, acc)]
    m = max(sizes)
    padded = torch.cat([x, x.new_zeros((m - len(x), *x.shape[1:]))]).to(acc.device)
    everything = acc.gather(padded)  # (processes · m) rows, in process order
    keep = torch.cat([torch.arange(r * m, r * m + k) for r, k in enumerate(sizes)])
    return everything[keep.to(everything.device)].to(x.device)


def sampler_for(settings: RunSettings, model_dir: Path) -> SamplerConfig:
    """Paper defaults < the model card's calibrated sampler < the user's config (recorded in the run)."""
    s = settings.sampler
    base = model_card(model_dir)["sampler"]
    fields = {}
    for f in dataclasses.fields(SamplerConfig):
        user = getattr(s, f.name, None)
        fields[f.name] = user if user is not None else base.get(f.name, f.default)
    return SamplerConfig(**fields)


class Run:
    """Everything one run holds. Built by :func:`prepare`; driven by :func:`execute`."""

    def __init__(self, settings: RunSettings, run_dir: RunDir, progress: bool = True, accelerator=None,
                 resumed: bool = False):
        self.settings = settings
        self.dir = run_dir
        self.resumed = resumed  # a new run that fails before its first label removes its folder (execute)
        # several processes (data parallel): the main one alone rates and writes the run folder
        self.acc = accelerator
        self.main = accelerator is None or accelerator.is_main_process
        self.progress = progress and self.main
        self.phases = Progress(self.progress)  # what a person watching sees (stderr)
        self.task: TaskSpec = load_task(settings.task)
        method_factory = METHODS.get(settings.method)
        if settings.oracle:
            ORACLES.get(settings.oracle)  # an unknown name fails before anything is loaded
        self.model_dir = resolve_model(settings.model)
        check_model_folder(self.model_dir)  # before the oracles: a broken model is the error to report
        check_device(settings.device if accelerator is None else accelerator.device)  # (gloo falls back to cpu)
        backend = model_card(self.model_dir)["backend"]
        self.backend = backend
        self.task = for_backend(self.task, backend)
        oracle_name = settings.oracle or self.task.oracles.get(backend, "")
        if not oracle_name:
            raise HerobenchError(f"task '{self.task.name}' names no oracle for backend '{backend}'")
        profile = resolve_profile(self.task, settings.rater.profile)
        self.profile = profile
        # feedback may come from any oracle -- or from a person, who needs none; evaluation always uses
        # the task's reference oracle
        human = settings.rater.kind == "human"
        self.feedback_oracle = None if human else make_oracle(oracle_name, self.task, profile,
                                                              settings.oracle_options)
        # (an explicit --oracle also evaluates when the task has no reference oracle for this backend)
        eval_name = self.task.oracles.get(backend) or oracle_name
        self.eval_oracle = make_oracle(eval_name, self.task, profile,
                                       settings.oracle_options if eval_name == oracle_name else None)
        self.method = method_factory()
        dtype = torch.float32
        if torch.device(settings.device).type == "cuda":
            # float32 means float32: TF32 convolutions (cuDNN's default) moved recomputed log-probs by
            # 3e-5 per element on an H200, a third of HERO's PPO clip range (tests/test_core_gpu.py)
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        device = settings.device if accelerator is None else accelerator.device
        self.phases.line(f"loading the model {self.model_dir} ({backend}, on {device})")
        components = load_components(self.model_dir, device=str(device), dtype=dtype)
        self.gen = Generator(components, sampler_for(settings, self.model_dir), device=device, dtype=dtype)
        self.method.setup(self.gen, dict(settings.method_options), settings.seed, accelerator=accelerator)
        if settings.rater.kind == "simulated":  # (a human rater is built last, below)
            self.rater = SimulatedRater(
                profile=profile, flip_rate=settings.rater.flip_rate, best_noise=settings.rater.best_noise,
                seed=settings.seed,
            )
        budget = settings.budget_labels if self.method.trains else 0
        if accelerator is not None and human:
            raise HerobenchError("a human rater labels one process' batches: run it without accelerate launch")
        # a torn tail is cut at the first new record, not here: a resume that fails later changes nothing
        self.ledger = FeedbackLedger.open(run_dir.labels, budget, repair=False) if self.main else None
        self.budget = budget
        self.iteration = 0  # iterations completed (learned from and checkpointed)
        self.labels_done = 0  # labels of those iterations (the ledger may hold one more, not yet learned)
        # time of the run's earlier processes (up to each one's last checkpoint; a resume adds its own)
        self.seconds_before = 0.0
        self.unet_seconds_before = 0.0
        self.timings: dict[str, float] = {}
        self.mirror = None  # --log-with trackers (herobench.harness.tracking), attached by prepare
        self.last_eval: dict | None = None  # this process' last "eval" row, for the checkpoint card
        self.extended_from: int | None = None  # a resume that raised the budget: the recorded one
        if human:  # last: it starts serving the labelling page
            from herobench.harness.human import HumanRater

            self.rater = HumanRater(run_dir.path / "human", host=settings.rater.host, port=settings.rater.port)

    # ------------------------------------------------------------------ bookkeeping
    def _time(self, key: str, t0: float) -> None:
        self.timings[key] = self.timings.get(key, 0.0) + time.perf_counter() - t0

    def config_record(self) -> dict:
        return {
            "settings": to_dict(self.settings),
            "sampler": dataclasses.asdict(self.gen.sampler),
            "task": {"name": self.task.name, "version": self.task.version},
            "oracle": {
                "feedback": ({"name": "human", "version": None} if self.feedback_oracle is None else
                             {"name": self.feedback_oracle.name, "version": self.feedback_oracle.version}),
                "evaluation": {"name": self.eval_oracle.name, "version": self.eval_oracle.version},
                "profile": self.profile,
            },
            "method": {"name": self.method.name, "protocol": self.method.protocol,
                       "custom_eval_noise": bool(getattr(self.method, "custom_eval_noise", False)),
                       "options": to_dict(getattr(self.method, "options", None) or {})},
            "model": str(self.model_dir),
            "environment": environment_info(),
        }

    def save_checkpoint(self, seconds: float = 0.0) -> None:
        """Atomically replace ``checkpoints/latest`` (LoRA + method state + harness state); the main
        process' alone (every process holds the same state). ``seconds``: the run's execution time so
        far, over all its processes (kept so that a resumed run's summary adds them up).

        Raises:
            FileSystemError, OSError: it could not be written (disk full, ...). What was half-written
                (``latest.tmp``) is removed first; ``latest`` is still the previous checkpoint.
        """
        if not self.main:
            return
        final = self.dir.checkpoints / "latest"
        tmp = self.dir.checkpoints / "latest.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        state = {"iteration": self.iteration, "best_score": self.rater.best_score, "labels": self.labels_done,
                 "seconds": seconds, "timings": self.timings,
                 "unet_seconds": self.unet_seconds_before + self.gen.unet_seconds}
        try:
            tmp.mkdir(parents=True)
            if self.method.trains:
                save_lora(self.gen.components.unet, tmp / "lora")
            write_card(self, tmp)
            # serialised in memory, then written: a failed write is an OSError naming the file (torch's own
            # writer reports a full disk as "unexpected pos ...")
            buf = io.BytesIO()
            torch.save(self.method.state_dict(), buf)
            write_bytes(tmp / "method.pt", buf.getvalue())
            write_bytes(tmp / "harness.json", json.dumps(state).encode())
        except BaseException as e:
            shutil.rmtree(tmp, ignore_errors=True)
            converted = _file_system_error(e, tmp)
            if converted is None:
                raise
            raise converted from e
        old = self.dir.checkpoints / "latest.old"
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)

    def load_checkpoint(self) -> None:
        ckpt = self.dir.checkpoints / "latest"
        old = self.dir.checkpoints / "latest.old"
        if not ckpt.exists() and old.exists() and self.main:  # killed between the two renames
            old.rename(ckpt)
        if self.main:  # a kill inside save_checkpoint: a half-written new one, or a half-removed old one
            shutil.rmtree(self.dir.checkpoints / "latest.tmp", ignore_errors=True)
            if ckpt.exists():
                shutil.rmtree(old, ignore_errors=True)
        if self.acc is not None:
            self.acc.wait_for_everyone()  # every process loads the checkpoint the main one fixed up
        if ckpt.exists():
            try:
                state = json.loads((ckpt / "harness.json").read_text())
                iteration, labels, best_score = int(state["iteration"]), int(state["labels"]), state["best_score"]
                if best_score is not None:
                    best_score = float(best_score)
                times = _times(state)  # (a checkpoint written before they were kept: zeros)
                if self.method.trains:
                    load_lora(self.gen.components.unet, ckpt / "lora")
                self.method.load_state_dict(torch.load(ckpt / "method.pt", weights_only=False))
            except HerobenchError:
                raise
            except Exception as e:  # noqa: BLE001 - any corruption becomes one line
                raise HerobenchError(f"checkpoint {ckpt} is corrupt ({type(e).__name__}: {e})") from e
            self.iteration, self.labels_done, self.rater.best_score = iteration, labels, best_score
            # a finished run resumed: its summary holds the times up to the end (the last evaluation too)
            times = _finished_times(self.dir, iteration, labels) or times
            self.seconds_before, self.timings, self.unet_seconds_before = times
        if self.ledger is not None:
            self._check_ledger_matches_checkpoint()

    def _check_ledger_matches_checkpoint(self) -> None:
        """The ledger must hold exactly the iterations the checkpoint learned from (1..iteration, with
        its label count), plus at most the next one (recorded, not yet learned: it is replayed)."""
        learned = [it for it in self.ledger.iterations if it <= self.iteration]
        held = sum(len(self.ledger.get(it).entries) for it in learned)
        extra = [it for it in self.ledger.iterations if it > self.iteration]
        if learned != list(range(1, self.iteration + 1)) or held != self.labels_done or extra not in (
            [], [self.iteration + 1]
        ):
            raise HerobenchError(
                f"{self.ledger.path} does not match the checkpoint: it commits iterations {_span(learned + extra)} "
                f"({held} labels up to iteration {self.iteration}), but the checkpoint learned iterations "
                f"1-{self.iteration} ({self.labels_done} labels); nothing was changed"
            )

    def close(self) -> None:
        """Release what the run holds open (the human rater's web server, the trackers)."""
        close = getattr(self.rater, "close", None)
        if close is not None:
            close()
        if self.mirror is not None:
            self.mirror.close()
            self.mirror = None

    def log(self, kind: str, path: Path, row: dict) -> None:
        """Append a ``train`` or ``eval`` row to its JSONL file (the record), then to the trackers."""
        append_jsonl(path, row)
        if self.mirror is not None:
            self.mirror.record(kind, row)

    # ------------------------------------------------------------------ evaluation
    def prompt_sets(self) -> dict[str, list[str]]:
        """The evaluated prompt sets: ``eval``, and ``train`` when the task's train prompts differ."""
        sets = {"eval": list(self.task.eval_prompts)}
        if list(self.task.train_prompts) != sets["eval"]:
            sets["train"] = list(self.task.train_prompts)
        return sets

    @torch.no_grad()
    def evaluate(self, only: Sequence[str] | None = None) -> list[dict]:
        """Success rate on held-out noise and prompts; never charged to the budget. ``only``: these
        prompt sets (a resume completes a point killed between its sets' rows); default all."""
        t0 = time.perf_counter()
        es = self.settings.eval
        sets = {k: v for k, v in self.prompt_sets().items() if only is None or k in only}
        self.phases.line(f"evaluating at {self.labels_done} labels: {es.n_images} images x {len(sets)} prompt "
                      f"set{'s' if len(sets) > 1 else ''} ({', '.join(sets)})")
        rows = []
        for name, base_prompts in sets.items():
            prompts = [base_prompts[i % len(base_prompts)] for i in range(es.n_images)]
            shown = self.method.eval_prompts(prompts, self.task)
            noise = eval_noise(es.n_images, self.gen.latent_shape, es.seed + EVAL_SEED_OFFSET)
            noise = self.method.eval_noise(noise)
            verdicts, images = [], []
            for i in range(0, es.n_images, es.batch_size):
                sl = slice(i, i + es.batch_size)
                rng = torch.Generator().manual_seed(es.seed + i)
                ro = self._sample(shown[sl], noise[sl], rng)
                # the judge sees the task prompt (what success means), not the enhanced wording
                if self.main:
                    verdicts += self.eval_oracle.judge(ro.images, prompts[sl])
                    images.append(ro.images.cpu())
            if not self.main:
                continue
            row = {"labels": self.labels_done, "iteration": self.iteration, "prompt_set": name,
                   **summarise(verdicts), "reasons": _reason_counts(verdicts),
                   "per_prompt": _per_prompt_counts(prompts, verdicts), **per_image(verdicts),
                   **guard_metrics(torch.cat(images), prompts, verdicts)}
            self.log("eval", self.dir.evals, row)
            rows.append(row)
            self.last_eval = row if name == "eval" else self.last_eval
        if self.main and (self.dir.checkpoints / "latest").is_dir():
            write_card(self, self.dir.checkpoints / "latest")  # the card names this evaluation's success
        self._time("evaluation", t0)
        self.phases.evaluated(time.perf_counter() - t0)
        if rows:
            self.phases.line(f"  at {self.labels_done} labels: success " + ", ".join(
                f"{r['success_rate']:.3f} ({r['prompt_set']})" for r in rows))
        return rows

    def _sample(self, prompts: list[str], noise: torch.Tensor, generator: torch.Generator) -> Rollout:
        """The batch, on every process: sampled whole, or (several processes) each samples its share of
        the rows -- with the whole batch's noise, so each row is the one-process row up to float noise --
        and all gather the rest."""
        n = len(prompts)
        if self.acc is None or n < self.acc.num_processes:
            return self.gen.sample(prompts, init_noise=noise, generator=generator)
        part = self.gen.sample(prompts, init_noise=noise, generator=generator, rows=process_share(n, self.acc))
        fields = ("latents", "log_probs", "prompt_embeds", "negative_embeds", "images")
        return Rollout(prompts=list(prompts), timesteps=part.timesteps,
                       **{f: _gather_rows(getattr(part, f), n, self.acc) for f in fields})

    # ------------------------------------------------------------------ one iteration
    def step(self) -> dict:
        it = self.iteration + 1
        s = self.settings
        n = min(s.batch_size, self.budget - self.labels_done)
        t0 = time.perf_counter()
        prompts = self.method.train_prompts(self.task, n)
        groups = self.method.groups(n)
        self.phases.line(f"iteration {it}: sampling {n} images")
        noise = self.method.init_noise(n, self.gen.latent_shape, _rng(s.seed, it, 1))
        rollout = self._sample(prompts, noise, _rng(s.seed, it, 2))
        self._time("sampling", t0)

        t0 = time.perf_counter()
        rater = "a person" if self.feedback_oracle is None else self.feedback_oracle.name
        self.phases.line(f"iteration {it}: rating ({rater})")
        # several processes: the main one alone rates and writes the ledger; every process learns
        feedback = _from_main(self._rate(it, rollout, groups) if self.main else None, self.acc)
        self._time("rating", t0)

        t0 = time.perf_counter()
        self.phases.line(f"iteration {it}: learning ({self.method.name}, {feedback.n_labels} labels)")
        stats = self.method.learn(rollout, feedback, _rng(s.seed, it, 4))
        self._time("learning", t0)
        self.iteration = it
        self.labels_done += feedback.n_labels
        return {"iteration": it, "labels": self.labels_done, "good": int(sum(feedback.good)), **stats}

    def _rate(self, it: int, rollout: Rollout, groups: list[int] | None) -> Feedback:
        """The batch's feedback: replayed from the ledger (the rater remembers its best), or asked and recorded."""
        s, n, prompts = self.settings, len(rollout), rollout.prompts
        hashes = [sha256_of_image(img) for img in rollout.images]
        recorded = self.ledger.get(it)
        if recorded is not None:  # labels given before a crash: replay them, never ask twice
            feedback, verdict_scores = _feedback_from_record(recorded, hashes)
            self.rater.remember_best(feedback, verdict_scores)  # as if it had just rated the batch
        else:
            # a person judges the images themself: no oracle is asked, and the ledger holds only their labels
            verdicts = None if self.feedback_oracle is None else self.feedback_oracle.judge(rollout.images, prompts)
            feedback = self.rater.rate(
                verdicts, self.method.protocol, groups=groups, rng=np.random.default_rng([s.seed, it, 3]),
                request=RatingRequest(rollout.images, tuple(prompts), tuple(hashes), it, self.budget,
                                      self.ledger.spent, _last_best_sha256(self.ledger), self.task.name),
            )
            judged = ([{"rater": "human"}] * n if verdicts is None else
                      [{"score": float(v.score), "reason": v.reason} for v in verdicts])
            entries = [
                {"prompt": p, "image_sha256": h, "good": bool(g), **j, "group": (groups[i] if groups else None)}
                for i, (p, h, g, j) in enumerate(zip(prompts, hashes, feedback.good, judged))
            ]
            self.ledger.record(it, entries, best=feedback.best, pairs=list(feedback.pairs), scores=feedback.scores)
        return feedback


def _last_best_sha256(ledger: FeedbackLedger) -> str | None:
    for it in reversed(ledger.iterations):
        rec = ledger.get(it)
        if rec.best is not None:
            return rec.entries[rec.best]["image_sha256"]
    return None


def _span(iterations: list[int]) -> str:
    if not iterations:
        return "none"
    return f"{iterations[0]}-{iterations[-1]}" if iterations == list(range(iterations[0], iterations[-1] + 1)) \
        else ", ".join(map(str, iterations))


def _per_prompt_counts(prompts: list[str], verdicts) -> dict[str, dict[str, int]]:
    """``{prompt: {"n", "successes", "unreadable"}}`` in the prompts' first-seen order: the whole
    per-prompt breakdown (``reasons`` keeps only the 12 most frequent reasons)."""
    out: dict[str, dict[str, int]] = {}
    for prompt, v in zip(prompts, verdicts, strict=True):
        c = out.setdefault(prompt, {"n": 0, "successes": 0, "unreadable": 0})
        c["n"] += 1
        c["successes"] += int(bool(v.success))
        c["unreadable"] += int(not v.readable)
    return out


def _reason_counts(verdicts) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in verdicts:
        out[v.reason] = out.get(v.reason, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1])[:12])


def _feedback_from_record(rec, hashes: list[str]) -> tuple[Feedback, list[float] | None]:
    if [e["image_sha256"] for e in rec.entries] != hashes:
        raise HerobenchError(
            "the replayed batch differs from the recorded one (image hashes do not match): "
            "resume on the same machine type, seed and code version"
        )
    if any("score" not in e for e in rec.entries):  # labelled by a person
        return rec.feedback(), None
    return rec.feedback(), [float(e["score"]) for e in rec.entries]


def _file_system_error(e: BaseException, where: Path) -> FileSystemError | None:
    """A library's wrapped file-system failure (safetensors' ``(os error 28)``, torch's "unexpected pos"
    on a full disk) as one line naming ``where`` and the cause; None for anything else (an ``OSError``
    stays one: the CLI words it, naming its own path)."""
    if not isinstance(e, Exception) or isinstance(e, OSError | HerobenchError):
        return None
    number = errno_in_text(str(e))
    if number is not None:
        return FileSystemError(where, os.strerror(number).lower())
    try:
        full = shutil.disk_usage(where.parent).free == 0
    except OSError:
        full = False
    return FileSystemError(where, "no space left on device") if full else None


def _times(state: dict) -> tuple[float, dict[str, float], float]:
    """(seconds, timings, unet_seconds) of a checkpoint's or a summary's record."""
    timings = state.get("timings") or {}
    if not isinstance(timings, dict):
        raise TypeError(f"timings must be an object, got {timings!r}")
    return (float(state.get("seconds") or 0.0), {str(k): float(v) for k, v in timings.items()},
            float(state.get("unet_seconds") or 0.0))


def _finished_times(rd: RunDir, iteration: int, labels: int) -> tuple[float, dict[str, float], float] | None:
    """The times in ``summary.json`` when it records the state the checkpoint holds (a finished run)."""
    try:
        summary = json.loads(rd.summary.read_text())
        if summary.get("iterations") == iteration and summary.get("labels") == labels:
            return _times(summary)
    except (OSError, ValueError, TypeError, AttributeError):
        pass  # no summary, or an unreadable one: the checkpoint's times
    return None


def _top_missing(path: Path) -> Path:
    """The highest ancestor of ``path`` (``path`` itself included) that does not exist yet."""
    top = path
    while not top.parent.exists() and top.parent != top:
        top = top.parent
    return top


def _remove_new_folder(path: Path, top: Path) -> None:
    """Remove the run folder ``path``, and the folders above it up to ``top`` that ``prepare`` created,
    while they are empty (another run may have started in one of them meanwhile)."""
    shutil.rmtree(path, ignore_errors=True)
    parent = path
    while parent != top and top in parent.parents:
        parent = parent.parent
        try:
            parent.rmdir()
        except OSError:
            return


def prepare(settings: RunSettings, out: Path | str = "runs", resume: Path | str | None = None,
            progress: bool = True, log_with: Sequence[str] = (), budget: int | None = None) -> Run:
    """Create (or reopen, with ``resume``) a run folder and build the run. Under ``accelerate launch``
    with several processes every process builds the run; the main one alone creates the folder.

    The folder is ``<out>/<task name>-<method>-s<seed>`` (:func:`herobench.harness.runlog.run_dir_name`;
    ``-2``, ``-3``, ... when taken). A run that cannot be built leaves no folder behind, nor any parent
    folder this call created. ``log_with``: trackers mirroring the run's logs (:mod:`herobench.harness.tracking`).

    ``budget`` (with ``resume``): continue the run to this many labels, at least its recorded budget
    (``run.extended_from`` is then the recorded one, and ``config.json`` records the new one once the
    run is rebuilt); None keeps the recorded budget.

    Raises:
        HerobenchError: ``budget`` below the recorded budget (nothing changes), or without ``resume``.
    """
    if budget is not None and resume is None:
        raise HerobenchError("budget= extends a resumed run; a new run takes its budget from its settings")
    run = _prepare(settings, out, resume, progress, budget)
    if log_with and run.main:
        from herobench.harness.tracking import open_mirror

        try:
            run.mirror = open_mirror(log_with, run.dir.path, run.dir.path.name, run.config_record())
        except BaseException:
            run.close()
            raise
    return run


def _prepare(settings: RunSettings | None, out: Path | str, resume: Path | str | None, progress: bool,
             budget: int | None) -> Run:
    if resume is not None:
        rd = RunDir(Path(resume))
        if not rd.config_json.exists():
            raise HerobenchError(f"'{resume}' is not a herobench run folder (no config.json)")
        try:
            saved = json.loads(rd.config_json.read_text())
            from herobench.config import from_dict

            settings = from_dict(RunSettings, saved["settings"], "settings")
        except HerobenchError:
            raise
        except OSError:
            raise
        except Exception as e:  # noqa: BLE001
            raise HerobenchError(f"'{resume}' has an unreadable config.json ({type(e).__name__}: {e})") from e
        recorded = settings.budget_labels
        settings = _extended(settings, budget, rd.path)
        run = Run(settings, rd, progress, _accelerator(settings.device), resumed=True)
        try:
            run.load_checkpoint()
            if settings.budget_labels != recorded and run.main:  # recorded only once the run rebuilt
                saved["settings"]["budget_labels"] = settings.budget_labels
                saved.setdefault("budget_extensions", []).append({"from": recorded, "to": settings.budget_labels})
                write_text_atomic(rd.config_json, json.dumps(saved, indent=2, default=str))
        except BaseException:
            run.close()  # a human rater's page is already serving
            raise
        run.extended_from = recorded if settings.budget_labels != recorded else None
        return run
    acc = _accelerator(settings.device)
    out = Path(out)
    name = run_dir_name(settings)  # (a task that does not load fails here, before any folder exists)
    path = out / name
    main = acc is None or acc.is_main_process
    top = None
    if main:
        k = 1
        while path.exists():
            k += 1
            path = out / f"{name}-{k}"
        top = _top_missing(path)
        path.mkdir(parents=True)
    path = _from_main(path, acc)
    rd = RunDir(path)
    try:
        run = Run(settings, rd, progress, acc)
    except BaseException:
        if main:
            _remove_new_folder(path, top)  # nothing was recorded yet: leave no empty run folder
        raise
    if run.main:
        try:  # (atomic: a kill leaves a complete config.json or none, and a folder without one is no run)
            write_text_atomic(rd.config_json, json.dumps(run.config_record(), indent=2, default=str))
        except BaseException:
            run.close()
            _remove_new_folder(path, top)
            raise
    return run


def _extended(settings: RunSettings, budget: int | None, path: Path) -> RunSettings:
    """``settings`` with the label budget raised to ``budget`` (None: unchanged).

    Raises:
        HerobenchError: ``budget`` is below the recorded one (a run's labels cannot be taken back)."""
    if budget is None or budget == settings.budget_labels:
        return settings
    if budget < settings.budget_labels:
        raise HerobenchError(f"--budget {budget} is below the budget of {settings.budget_labels} labels recorded in "
                             f"{path}; a resumed run can only be extended (start a new run for a smaller budget)")
    return dataclasses.replace(settings, budget_labels=budget)


def _point_due(run: Run) -> bool:
    """Whether the run's current label count is a point of the evaluation grid: the start, each
    ``every_labels`` crossed by the last iteration, and the end of the budget (as the loop evaluates)."""
    every, done = run.settings.eval.every_labels, run.labels_done
    if run.iteration == 0 or done == run.budget:
        return True
    before = done - len(run.ledger.get(run.iteration).entries)
    return done // every > before // every


def _missing_prompt_sets(run: Run) -> list[str]:
    """The prompt sets the current point still lacks a row for (every set is checked, not only "is there
    a row": a kill between the ``eval`` and ``train`` rows of a point must not lose the ``train`` one)."""
    if not _point_due(run):
        return []
    rows = read_jsonl(run.dir.evals) if run.dir.evals.exists() else []
    done = {e.get("prompt_set") for e in rows if e.get("labels") == run.labels_done}
    return [name for name in run.prompt_sets() if name not in done]


def _drop_unlearned_train_rows(run: Run) -> None:
    """Keep one ``train.jsonl`` row per iteration the checkpoint learned: a kill between a row's append
    and its checkpoint leaves the row of an iteration that is redone (and logged again) on resume."""
    path = run.dir.train_log
    if not path.exists():
        return
    rows = read_jsonl(path)
    keep, seen = [], set()
    for r in rows:
        it = r.get("iteration")
        if isinstance(it, int) and (it > run.iteration or it in seen):
            continue
        seen.add(it)
        keep.append(r)
    if len(keep) < len(rows):
        write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in keep))


def execute(run: Run) -> dict:
    """Drive a prepared run to the end of its budget; returns the summary (also in summary.json).

    A new run (not a resume) that stops on an error before it recorded its first label -- a replay log
    that does not match, a full disk -- removes its folder: nothing in it is worth resuming."""
    try:
        return _execute(run)
    except Exception:
        if run.main and not run.resumed and run.ledger.spent == 0:
            shutil.rmtree(run.dir.path, ignore_errors=True)
        raise


def _execute(run: Run) -> dict:
    s = run.settings
    t_start = time.perf_counter()

    def seconds() -> float:  # this run's execution time, over all its processes so far
        return run.seconds_before + time.perf_counter() - t_start

    every = s.eval.every_labels
    if run.main:
        _drop_unlearned_train_rows(run)
    # (a resume may land between points; several processes: the main one, which wrote the evaluations, decides)
    missing = _from_main(_missing_prompt_sets(run) if run.main else None, run.acc)
    if missing:
        run.evaluate(only=missing)
    run.phases.start_bar(run.budget if run.method.trains else 0, run.labels_done,
                         eval_points(run.budget, s.batch_size, every, run.method.trains), f"{s.task}/{s.method}")
    try:
        while run.method.trains and run.labels_done < run.budget:
            before, t_iteration = run.labels_done, time.perf_counter()
            stats = run.step()
            if run.main:
                run.log("train", run.dir.train_log, stats)
            t0 = time.perf_counter()
            run.save_checkpoint(seconds())
            run._time("io", t0)
            run.phases.iterated(run.labels_done - before, time.perf_counter() - t_iteration)
            if run.labels_done // every > before // every or run.labels_done == run.budget:
                run.evaluate()
    finally:
        run.phases.close()
    if not run.method.trains:
        run.save_checkpoint(seconds())
    if not run.main:  # the main process writes the summary and hands it to the others
        return _from_main(None, run.acc)
    evals = read_jsonl(run.dir.evals)
    last = {e["prompt_set"]: e for e in evals if e["labels"] == run.labels_done}
    first = {e["prompt_set"]: e for e in evals if e["labels"] == 0}
    summary = {
        "task": s.task, "method": s.method, "seed": s.seed, "labels": run.labels_done,
        "best_picks": run.ledger.n_best_picks, "pairs": run.ledger.n_pairs, "iterations": run.iteration,
        "success_start": {k: v["success_rate"] for k, v in first.items()},
        "success_end": {k: v["success_rate"] for k, v in last.items()},
        "interval_end": {k: [v["lo"], v["hi"]] for k, v in last.items()},
        # summed over the run's processes (each up to its last checkpoint: work a kill threw away and
        # that was redone is counted once)
        "seconds": seconds(),
        "timings": run.timings,
        "unet_seconds": run.unet_seconds_before + run.gen.unet_seconds,
    }
    write_json_atomic(run.dir.summary, summary)
    return _from_main(summary, run.acc)


def run(settings: RunSettings, out: Path | str = "runs", resume: Path | str | None = None,
        progress: bool = True, log_with: Sequence[str] = (), budget: int | None = None) -> tuple[Path, dict]:
    """The Python API behind ``herobench run``: returns (run folder, summary). ``budget``: see
    :func:`prepare`."""
    r = prepare(settings, out, resume, progress, log_with, budget)
    try:
        return r.dir.path, execute(r)
    finally:
        r.close()
