"""How idle OpenMP threads wait: chosen from the load at start, the user's setting wins, and it changes no number."""

from __future__ import annotations

import subprocess
import sys

import pytest

from herobench import openmp
from herobench.harness.runlog import environment_info


def test_idle_machine_gets_a_short_spin():
    env: dict[str, str] = {}
    chosen = openmp.choose_wait_policy(env, load=0.1)
    assert env == {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": openmp.SHORT_SPIN}
    assert chosen == f"OMP_WAIT_POLICY=PASSIVE GOMP_SPINCOUNT={openmp.SHORT_SPIN}"


@pytest.mark.parametrize("load", [openmp.IDLE_LOAD, 1.3, float("inf")])
def test_busy_machine_sleeps_at_once(load):
    env: dict[str, str] = {}
    assert openmp.choose_wait_policy(env, load=load) == "OMP_WAIT_POLICY=PASSIVE"
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}


@pytest.mark.parametrize("user", [{"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "0"}])
def test_the_users_setting_is_kept(user):
    env = dict(user)
    openmp.choose_wait_policy(env, load=0.0)
    assert env == user


def test_no_load_average_stays_passive(monkeypatch):
    def no_load():
        raise OSError("no load average")

    monkeypatch.setattr(openmp.os, "getloadavg", no_load)
    env: dict[str, str] = {}
    openmp.choose_wait_policy(env)
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}


def test_config_records_the_wait_settings():
    import torch  # noqa: F401  (environment_info reads torch only when it is loaded)

    assert environment_info()["openmp_wait"] == openmp.describe()


CHILD = """
import hashlib
import torch
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Conv2d(4, 32, 3, padding=1), torch.nn.GroupNorm(8, 32), torch.nn.SiLU(),
                          torch.nn.Conv2d(32, 4, 3, padding=1))
x = torch.randn(16, 4, 16, 16)
loss = net(x).square().mean()
loss.backward()
out = torch.cat([net(x).flatten(), *[p.grad.flatten() for p in net.parameters()]])
print(torch.get_num_threads(), hashlib.sha256(out.detach().numpy().tobytes()).hexdigest())
"""


def test_wait_settings_change_no_number():
    """Two threads, sleeping at once or spinning first: the same bytes (the threads' work split is the same)."""
    digests = set()
    for wait in ({"OMP_WAIT_POLICY": "PASSIVE"}, {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "30000"},
                 {"OMP_WAIT_POLICY": "ACTIVE"}):
        env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "2", **wait}
        out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
        threads, digest = out.stdout.split()
        assert threads == "2"
        digests.add(digest)
    assert len(digests) == 1
