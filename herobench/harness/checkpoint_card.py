"""The model card (``README.md``) of every checkpoint folder: a YAML header the Hugging Face Hub and
diffusers read (``library_name: diffusers``, ``base_model``, tags ``lora, herobench, <task>, <method>``) with
herobench's own keys (labels spent, success at the last evaluation, herobench version), written with
``huggingface_hub.ModelCard``. The LoRA beside it (``lora/``) loads with plain
``StableDiffusionPipeline.load_lora_weights``; a card is no part of the state a resume reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from herobench import __version__
from herobench.harness.runlog import read_jsonl, write_text_atomic


def base_model_name(model: str, model_dir: Path) -> str:
    """The base model's name: ``glyphworld`` for the shipped model, else the folder's recorded
    ``_name_or_path`` (a Hub id when it was saved from one), else the folder's name."""
    if model in ("", "glyphworld"):
        return "glyphworld"
    try:
        recorded = json.loads((Path(model_dir) / "model_index.json").read_text()).get("_name_or_path")
    except (OSError, ValueError, AttributeError):
        recorded = None
    return str(recorded) if recorded else Path(model_dir).name


def last_evaluation(evals: Path, labels: int) -> dict | None:
    """The last ``eval``-prompt-set row of ``evals.jsonl`` at or before ``labels`` (None before the first)."""
    if not Path(evals).is_file():
        return None
    rows = [r for r in read_jsonl(evals) if r.get("prompt_set") == "eval" and r.get("labels", 0) <= labels]
    return rows[-1] if rows else None


def card_data(run: Any) -> dict:
    """The YAML header's fields for a :class:`herobench.harness.runner.Run` at its current state."""
    s = run.settings
    # (the row in memory; a resumed run that has not evaluated yet reads it from evals.jsonl)
    last = run.last_eval if run.last_eval is not None else last_evaluation(run.dir.evals, run.labels_done)
    return {
        "library_name": "diffusers",
        "base_model": base_model_name(s.model, run.model_dir),
        "tags": ["lora", "herobench", run.task.name, s.method],
        "herobench_version": __version__,
        "task": run.task.name, "method": s.method, "seed": s.seed,
        "labels_spent": run.labels_done, "label_budget": run.budget, "iterations": run.iteration,
        "success_rate": None if last is None else last["success_rate"],
        "success_interval": None if last is None else [last["lo"], last["hi"]],
        "success_at_labels": None if last is None else last["labels"],
    }


def card_text(run: Any) -> str:
    """The whole card: YAML header and a short body (what it is, how to load it)."""
    from huggingface_hub import ModelCard, ModelCardData

    data = card_data(run)
    header = ModelCardData(**data).to_yaml()
    rate = "not evaluated yet" if data["success_rate"] is None else (
        f"{data['success_rate']:.3f} (95% CI {data['success_interval'][0]:.3f}-{data['success_interval'][1]:.3f}) "
        f"at {data['success_at_labels']} labels")
    load = ("This method does not train: the folder holds no LoRA, the base model is the result."
            if not run.method.trains else
            "```python\nfrom diffusers import StableDiffusionPipeline\n\n"
            f"pipe = StableDiffusionPipeline.from_pretrained({str(run.model_dir)!r}, local_files_only=True)\n"
            "pipe.load_lora_weights(\"<this folder>/lora\")\n```")
    body = (f"# {data['task']} / {data['method']} (seed {data['seed']})\n\n"
            f"A LoRA on `{data['base_model']}` finetuned by herobench {__version__} with `{data['method']}` on task "
            f"`{data['task']}` from {data['labels_spent']} of {data['label_budget']} labels "
            f"({data['iterations']} iterations).\n\n"
            f"Success on the task's held-out evaluation noise and prompts: {rate}.\n\n{load}\n\n"
            "The run folder's `config.json`, `labels.jsonl` and `evals.jsonl` are the full record.\n")
    return str(ModelCard(f"---\n{header}\n---\n\n{body}"))


def write_card(run: Any, folder: Path) -> Path:
    """Write ``folder/README.md`` (atomically: a kill leaves the old card or the new one)."""
    path = Path(folder) / "README.md"
    write_text_atomic(path, card_text(run))
    return path


__all__ = ["base_model_name", "card_data", "card_text", "last_evaluation", "write_card"]
