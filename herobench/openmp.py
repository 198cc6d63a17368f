"""How torch's idle OpenMP threads wait for work: chosen once, before torch loads (libgomp reads it at start).

Spinning threads on cores that other work needs made 2 threads 5-17x slower than 1 (issue 28), so on a
busy machine idle threads sleep at once (``OMP_WAIT_POLICY=PASSIVE``). On an idle machine sleeping costs
a wake-up before every parallel operation: on the 2-core Intel machine of 2026-12-02 a 2-thread HERO
iteration took 50.8 s passive and 37.0 s with a short spin (``GOMP_SPINCOUNT=30000``, about 0.3 ms before
sleeping), and passive 2 threads sampled slower than 1 thread (docs/PERFORMANCE.md). How threads wait
changes no number a run computes, only its speed, so the choice may depend on the machine's load.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

IDLE_LOAD = 0.5  # 1-minute load average below which the machine counts as idle
SHORT_SPIN = "30000"  # libgomp spins before sleeping (its default without a policy is 300000, ~3 ms)


def choose_wait_policy(environ: MutableMapping[str, str] | None = None, load: float | None = None) -> str:
    """Set ``OMP_WAIT_POLICY=PASSIVE``, plus ``GOMP_SPINCOUNT`` short spin when the machine is idle, unless
    the user set either; return what was chosen (recorded in a run's ``config.json``)."""
    env = os.environ if environ is None else environ
    if "OMP_WAIT_POLICY" in env or "GOMP_SPINCOUNT" in env:
        return describe(env)
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:  # no load average on this platform: stay safe
            load = float("inf")
    if load < IDLE_LOAD:
        env["GOMP_SPINCOUNT"] = SHORT_SPIN
    return describe(env)


def describe(environ: MutableMapping[str, str] | None = None) -> str:
    """The wait settings in force, e.g. ``OMP_WAIT_POLICY=PASSIVE GOMP_SPINCOUNT=30000``."""
    env = os.environ if environ is None else environ
    return " ".join(f"{k}={env[k]}" for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT") if k in env) or "default"
