"""Building a run from its settings: task, model, oracles, generator, method, rater and ledger.

:func:`build` is what :class:`herobench.harness.runner.Run` holds before its first iteration; the order
of its steps is part of the contract -- every name is checked before anything heavy loads, a broken
model is reported before the oracles load, and a person's labelling page (which starts serving) is
built last, so a run that cannot be built leaves nothing open.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from herobench.config import RunSettings
from herobench.core.generator import Generator, SamplerConfig
from herobench.core.pipeline import check_device, check_model_folder, load_components
from herobench.errors import HerobenchError
from herobench.harness.ledger import FeedbackLedger
from herobench.harness.progress import Progress
from herobench.harness.rater import SimulatedRater
from herobench.harness.runlog import RunDir
from herobench.methods import METHODS
from herobench.methods.base import Method
from herobench.modelcard import model_card, resolve_model
from herobench.oracles import ORACLES, make_oracle
from herobench.tasks import for_backend, load_task, resolve_profile
from herobench.types import Oracle, Rater, TaskSpec


def sampler_for(settings: RunSettings, model_dir: Path) -> SamplerConfig:
    """Paper defaults < the model card's calibrated sampler < the user's config (recorded in the run)."""
    s = settings.sampler
    base = model_card(model_dir)["sampler"]
    fields = {}
    for f in dataclasses.fields(SamplerConfig):
        user = getattr(s, f.name, None)
        fields[f.name] = user if user is not None else base.get(f.name, f.default)
    return SamplerConfig(**fields)


def disable_tf32(device: str | torch.device) -> None:
    """On CUDA, make float32 mean float32 for the whole process: TF32 matmuls and convolutions off.

    Why: TF32 convolutions (cuDNN's default) moved recomputed log-probs by 3e-5 per element on an H200,
    a third of HERO's PPO clip range (tests/test_core_gpu.py), so a policy-gradient update would clip on
    rounding rather than on the policy's change. The switch is process-wide (torch.backends), which is
    why it is a named step of :func:`build` and not hidden in a constructor. A CPU device changes nothing.
    """
    if torch.device(device).type == "cuda":
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False


@dataclass
class Built:
    """The pieces of one run, as :func:`build` made them."""

    task: TaskSpec  # (for the model's backend)
    backend: str
    profile: str
    model_dir: Path
    feedback_oracle: Oracle | None  # None: a person rates
    eval_oracle: Oracle
    method: Method
    gen: Generator
    rater: Rater
    ledger: FeedbackLedger | None  # the main process' alone
    budget: int  # labels the run may spend (0 for a method that does not train)


def _oracles(settings: RunSettings, task: TaskSpec, backend: str, oracle_name: str,
             profile: str) -> tuple[Oracle | None, Oracle]:
    """(feedback oracle, evaluation oracle). Feedback may come from any oracle -- or from a person, who
    needs none; evaluation always uses the task's reference oracle (an explicit ``--oracle`` also
    evaluates when the task has no reference oracle for this backend)."""
    human = settings.rater.kind == "human"
    feedback = None if human else make_oracle(oracle_name, task, profile, settings.oracle_options)
    eval_name = task.oracles.get(backend) or oracle_name
    evaluation = make_oracle(eval_name, task, profile, settings.oracle_options if eval_name == oracle_name else None)
    return feedback, evaluation


def build(settings: RunSettings, run_dir: RunDir, phases: Progress, accelerator=None, main: bool = True) -> Built:
    """Every piece of a run, in the order the module docstring gives. ``main``: this process writes the
    run folder (it alone opens the ledger).

    Raises:
        HerobenchError (and its subclasses): an unknown name, a broken model or device, a task without an
            oracle for the model's backend, a human rater under several processes.
    """
    task = load_task(settings.task)
    method_factory = METHODS.get(settings.method)
    if settings.oracle:
        ORACLES.get(settings.oracle)  # an unknown name fails before anything is loaded
    model_dir = resolve_model(settings.model)
    check_model_folder(model_dir)  # before the oracles: a broken model is the error to report
    check_device(settings.device if accelerator is None else accelerator.device)  # (gloo falls back to cpu)
    backend = model_card(model_dir)["backend"]
    task = for_backend(task, backend)
    oracle_name = settings.oracle or task.oracles.get(backend, "")
    if not oracle_name:
        raise HerobenchError(f"task '{task.name}' names no oracle for backend '{backend}'")
    profile = resolve_profile(task, settings.rater.profile)
    feedback_oracle, eval_oracle = _oracles(settings, task, backend, oracle_name, profile)
    method = method_factory()
    disable_tf32(settings.device)
    device = settings.device if accelerator is None else accelerator.device
    phases.line(f"loading the model {model_dir} ({backend}, on {device})")
    components = load_components(model_dir, device=str(device), dtype=torch.float32)
    gen = Generator(components, sampler_for(settings, model_dir), device=device, dtype=torch.float32,
                    precision=settings.precision)
    method.setup(gen, dict(settings.method_options), settings.seed, accelerator=accelerator)
    human = settings.rater.kind == "human"
    rater: Rater | None = None if human else SimulatedRater(  # (a person's page is built last, below)
        profile=profile, flip_rate=settings.rater.flip_rate, best_noise=settings.rater.best_noise)
    if accelerator is not None and human:
        raise HerobenchError("a human rater labels one process' batches: run it without accelerate launch")
    budget = settings.budget_labels if method.trains else 0
    # a torn tail is cut at the first new record, not here: a resume that fails later changes nothing
    ledger = FeedbackLedger.open(run_dir.labels, budget, repair=False) if main else None
    if human:  # last: it starts serving the labelling page
        from herobench.harness.human import HumanRater

        rater = HumanRater(run_dir.path / "human", host=settings.rater.host, port=settings.rater.port)
    return Built(task, backend, profile, model_dir, feedback_oracle, eval_oracle, method, gen, rater, ledger, budget)
