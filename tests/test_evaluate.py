import pytest
import torch

from herobench.harness.evaluate import eval_noise, summarise
from herobench.stats import wilson_interval
from herobench.types import Verdict


@pytest.mark.parametrize(
    "k, n, lo, hi",
    [  # Newcombe (1998), Stat. Med. 17:857, Table I, method 3 (Wilson score, no continuity correction)
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0000, 0.1611),
        (1, 29, 0.0061, 0.1718),
        (29, 29, 0.8830, 1.0000),
        (5, 10, 0.2366, 0.7634),
    ],
)
def test_wilson_against_published_values(k, n, lo, hi):
    got = wilson_interval(k, n)
    assert got == pytest.approx((lo, hi), abs=5e-5)


def test_wilson_edges():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(0, 50)
    assert lo == 0.0 and 0 < hi < 0.1
    lo, hi = wilson_interval(50, 50)
    assert hi == 1.0 and 0.9 < lo < 1.0
    assert wilson_interval(5, 10, z=2.576)[0] < wilson_interval(5, 10)[0]  # 99 % is wider
    for bad in [(-1, 5), (6, 5), (1, -1)]:
        with pytest.raises(ValueError):
            wilson_interval(*bad)


def test_eval_noise_is_fixed_and_independent_of_n():
    a = eval_noise(8, (4, 16, 16), seed=10_000)
    assert a.shape == (8, 4, 16, 16) and a.dtype == torch.float32
    assert torch.equal(a, eval_noise(8, (4, 16, 16), seed=10_000))
    assert torch.equal(a[:3], eval_noise(3, (4, 16, 16), seed=10_000))  # a prefix of a larger set
    assert torch.equal(a[1:], eval_noise(7, (4, 16, 16), seed=10_001))
    assert not torch.equal(a, eval_noise(8, (4, 16, 16), seed=0))
    assert not torch.equal(a[0], a[1])
    big = eval_noise(64, (4, 16, 16), seed=1)
    assert abs(big.mean().item()) < 0.02 and abs(big.std().item() - 1) < 0.02
    assert eval_noise(0, (4, 2, 2), seed=0).shape == (0, 4, 2, 2)


def test_summarise():
    v = [
        Verdict(success=True, score=1.0, reason="ok"),
        Verdict(success=False, score=0.0, reason="unreadable", readable=False),
        Verdict(success=True, score=0.8, reason="ok"),
        Verdict(success=False, score=0.2, reason="two roses"),
    ]
    s = summarise(v)
    assert s["n"] == 4 and s["success_rate"] == 0.5 and s["unreadable_rate"] == 0.25
    assert s["mean_score"] == pytest.approx(0.5)
    assert (s["lo"], s["hi"]) == wilson_interval(2, 4)
    with pytest.raises(ValueError):
        summarise([])
