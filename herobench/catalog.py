"""What exists: tasks, methods and oracles, with one line each (``herobench ls``)."""

from __future__ import annotations


def listing(what: str = "all") -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    if what in ("tasks", "all"):
        from herobench.tasks import list_tasks, load_task

        out["tasks"] = [(n, load_task(n).description) for n in list_tasks()]
    if what in ("methods", "all"):
        from herobench.methods import DESCRIPTIONS, METHODS

        out["methods"] = [(n, DESCRIPTIONS.get(n, "")) for n in METHODS.names()]
    if what in ("oracles", "all"):
        from herobench.oracles import DESCRIPTIONS, ORACLES

        out["oracles"] = [(n, DESCRIPTIONS.get(n, "")) for n in ORACLES.names()]
    return out

