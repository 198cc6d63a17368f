"""Resolve a run's settings from a TOML file, CLI flags and ``--set`` overrides (in that order).

CLI flags are turned into overrides so that one path validates everything and names bad keys."""

from __future__ import annotations

import json
from pathlib import Path

from herobench.config import RunSettings, apply_overrides, check_config_file, from_dict, load_toml
from herobench.tasks import load_task


def settings_from_cli(task: str | None = None, method: str | None = None, budget: int | None = None,
                      seed: int | None = None, model: str | None = None, oracle: str | None = None,
                      device: str | None = None, config_path: Path | None = None,
                      overrides: list[str] | None = None) -> RunSettings:
    data = load_toml(config_path) if config_path is not None else {}
    if config_path is not None:  # the file's own values are checked before flags replace some of them
        check_config_file(data, config_path)
    flags = {"task": task, "method": method, "budget_labels": budget, "seed": seed, "model": model,
             "oracle": oracle, "device": device}
    data = {**data, **{k: v for k, v in flags.items() if v is not None}}
    data = apply_overrides(data, list(overrides or []), RunSettings)
    if "task" in data and "budget_labels" not in data:
        data["budget_labels"] = load_task(data["task"]).budget_for(data.get("method"))
    # a TOML round trip of every value keeps one validation path for files and flags
    return from_dict(RunSettings, json.loads(json.dumps(data)), "")
