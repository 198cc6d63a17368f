import math

import numpy as np
import pytest

from herobench.errors import ConfigError
from herobench.harness.rater import SimulatedRater, check_best
from herobench.types import Feedback, Rater, Verdict, make_feedback


def rng_for(seed: int, iteration: int) -> np.random.Generator:
    """An iteration's own reproducible stream, seeded by (seed, iteration) as the runner seeds each one."""
    return np.random.default_rng([seed, iteration])


def verdicts(successes, scores=None):
    scores = scores if scores is not None else [0.5] * len(successes)
    return [Verdict(success=bool(s), score=float(sc), reason="r") for s, sc in zip(successes, scores)]


def test_hero_exact_labels_and_best_among_good():
    v = verdicts([1, 0, 1, 0], [0.6, 0.99, 0.8, 0.1])  # the highest score (0.99) is a bad image
    fb = SimulatedRater().rate(v, "hero")
    assert fb == Feedback(good=(True, False, True, False), best=2)
    assert fb.n_labels == 4 and fb.pairs == () and fb.scores is None


def rate_after(r: SimulatedRater, prev_best_score, v, rng=None):
    """``r``'s feedback on ``v`` when its current best scored ``prev_best_score`` (the rater owns it)."""
    r.best_score = prev_best_score
    return r.rate(v, "hero", rng=rng)


def test_hero_keeps_previous_best_unless_beaten():
    v = verdicts([1, 1], [0.6, 0.7])
    r = SimulatedRater()
    assert rate_after(r, 0.9, v).best is None and r.best_score == 0.9
    assert rate_after(r, 0.7, v).best is None  # a tie keeps the previous best
    assert rate_after(r, 0.69, v).best == 1
    assert r.best_score == 0.7  # the new best's score is the rater's own from now on


def test_the_rater_owns_its_previous_best():
    """The first pick's score becomes the rater's best; the next batch is compared with it without anyone
    passing it back; a replayed batch (remember_best) moves it as a rated one does."""
    r = SimulatedRater()
    assert r.best_score is None
    assert r.rate(verdicts([1, 1], [0.5, 0.8]), "hero").best == 1 and r.best_score == 0.8
    assert r.rate(verdicts([1, 0], [0.7, 0.9]), "hero").best is None and r.best_score == 0.8
    assert r.rate(verdicts([0, 1], [0.1, 0.85]), "hero").best == 1 and r.best_score == 0.85
    r.remember_best(Feedback(good=(True, True), best=0), [0.3, 0.2])  # a batch replayed from the ledger
    assert r.best_score == 0.3
    r.remember_best(Feedback(good=(True,), best=0), None)  # a person's labels carry no score: unchanged
    r.remember_best(Feedback(good=(True, False)), [0.9, 0.1])  # no best picked: unchanged
    assert r.best_score == 0.3
    for protocol in ("scalar", "d3po", "none"):  # only the hero protocol picks a best
        r.rate(verdicts([1, 0], [1.0, 0.0]), protocol, groups=[0, 0])
    assert r.best_score == 0.3


def test_both_raters_satisfy_the_rater_protocol(tmp_path):
    from herobench.harness.human import HumanRater

    assert isinstance(SimulatedRater(), Rater)
    with HumanRater(tmp_path / "human") as person:
        assert isinstance(person, Rater) and person.best_score is None


def test_hero_previous_best_stays_on_ties_as_a_person_keeps_it():
    # a pass/fail oracle: every success scores 1.0, and so did the previous best. A person shown the good
    # images beside the current best keeps it (sony/hero user_feedback_interface.py:675-698): never redrawn
    r = SimulatedRater()
    v = verdicts([1, 0, 1, 1], [1.0, 0.0, 1.0, 1.0])
    assert all(rate_after(r, 1.0, v, rng_for(4, i)).best is None for i in range(200))
    assert rate_after(r, 1.0, v).best is None  # without an rng too
    # a graded in-class score: a strictly better good image replaces it, the best of the batch
    graded = verdicts([1, 1, 0, 1], [0.8, 0.95, 0.99, 0.9])  # 0.99 is a bad image
    assert all(rate_after(r, 0.9, graded, rng_for(4, i)).best == 1 for i in range(50))
    assert all(rate_after(r, 0.95, graded, rng_for(4, i)).best is None for i in range(50))


def test_hero_first_pick_draws_uniformly_among_tied_good_images():
    r = SimulatedRater()
    v = verdicts([1, 0, 1, 1], [1.0, 0.0, 1.0, 1.0])
    n = 3000
    picks = [rate_after(r, None, v, rng_for(4, i)).best for i in range(n)]  # no previous best
    for outcome in (0, 2, 3):  # three tied good images, each a third of the time
        share = sum(p == outcome for p in picks) / n
        assert abs(share - 1 / 3) < 4 * math.sqrt((1 / 3) * (2 / 3) / n), (outcome, share)
    assert None not in picks and 1 not in picks  # the first pick is due; a bad image is never the best
    assert [rate_after(r, None, v, rng_for(4, i)).best for i in range(50)] == picks[:50]  # seeded per iteration
    # a new best strictly above the previous one, tied with another good image: drawn between the two
    tied = verdicts([1, 1, 1], [0.7, 0.9, 0.9])
    picks = {rate_after(r, 0.8, tied, rng_for(4, i)).best for i in range(100)}
    assert picks == {1, 2}


def test_best_anchor_stays_put_across_iterations_without_a_strictly_better_image():
    # the rater keeps the best's score itself from one iteration to the next (types.Rater)
    r = SimulatedRater()
    rng = np.random.default_rng(0)
    anchors = []
    for it in range(12):
        good = rng.random(16) < 0.5
        good[it] = True  # at least one success each batch
        fb = r.rate(verdicts(good, [1.0 if g else 0.0 for g in good]), "hero", rng=rng_for(0, it))
        if fb.best is not None:
            anchors.append((it, fb.best))
    assert len(anchors) == 1 and anchors[0][0] == 0  # picked once, on the first batch, then kept


def test_check_best_is_the_contract_of_both_raters():
    check_best((True, False), 0, has_prev_best=False)
    check_best((True, False), None, has_prev_best=True)  # keep the previous best
    check_best((False, False), None, has_prev_best=False)  # nothing good: no best yet
    with pytest.raises(ValueError, match="good images"):
        check_best((True, False), 1, has_prev_best=True)
    with pytest.raises(ValueError, match="no previous best"):
        check_best((True, False), None, has_prev_best=False)
    with pytest.raises(ValueError, match="not an image"):
        check_best((True, False), 2, has_prev_best=True)


def test_make_feedback_is_the_one_shape_of_every_protocol():
    """What both raters return is built here (SimulatedRater.rate and HumanRater.rate call it)."""
    good = (True, False, True)
    assert make_feedback("hero", good, best=2) == Feedback(good=good, best=2)
    assert make_feedback("hero", good, best=None, has_prev_best=True) == Feedback(good=good)
    assert make_feedback("scalar", good, best=2) == Feedback(good=good, scores=(1.0, 0.0, 1.0))  # best ignored
    assert make_feedback("d3po", good, groups=[0, 0, 1]) == Feedback(good=good, pairs=((0, 1),))
    assert make_feedback("none", good) == Feedback(good=())
    with pytest.raises(ValueError, match="no previous best to keep"):
        make_feedback("hero", good, best=None)
    with pytest.raises(ValueError, match="must be one of the good images"):
        make_feedback("hero", good, best=1, has_prev_best=True)
    with pytest.raises(ValueError, match="one group id per image"):
        make_feedback("d3po", good, groups=[0, 0])
    with pytest.raises(ConfigError, match="unknown feedback protocol 'dpo'"):
        make_feedback("dpo", good)


def test_hero_edge_cases_no_good_and_all_good():
    r = SimulatedRater()
    assert r.rate(verdicts([0, 0, 0]), "hero") == Feedback(good=(False, False, False), best=None)
    fb = r.rate(verdicts([1, 1, 1], [0.2, 0.9, 0.9]), "hero")
    assert fb.good == (True, True, True) and fb.best == 1  # ties go to the earliest image
    assert r.rate([], "hero") == Feedback(good=())


def test_flip_rate_statistics_match_the_setting():
    rater = SimulatedRater(flip_rate=0.2)
    truth = np.arange(200) % 3 == 0
    v = verdicts(truth)
    flips = 0
    n_iter = 100
    for it in range(n_iter):
        fb = rater.rate(v, "hero", rng=rng_for(7, it))
        flips += int((np.array(fb.good) != truth).sum())
    n = n_iter * len(truth)
    rate = flips / n
    assert abs(rate - 0.2) < 4 * math.sqrt(0.2 * 0.8 / n), rate  # ~0.011
    # both directions are flipped: good->bad and bad->good
    fb = rater.rate(v, "hero", rng=rng_for(7, 0))
    good = np.array(fb.good)
    assert (good & ~truth).any() and (~good & truth).any()


def test_randomness_is_reproducible_and_independent_per_iteration():
    rater = SimulatedRater(flip_rate=0.3, best_noise=0.2)
    v = verdicts(np.arange(64) % 2 == 0, np.linspace(0, 1, 64))
    a = rater.rate(v, "hero", rng=rng_for(1, 5))
    assert a == rate_after(rater, None, v, rng_for(1, 5))  # (the same first pick, not against a)
    assert a == SimulatedRater(flip_rate=0.3, best_noise=0.2).rate(
        v, "hero", rng=np.random.default_rng([1, 5])
    )
    assert a.good != rate_after(rater, None, v, rng_for(1, 6)).good
    assert (
        a.good
        != SimulatedRater(flip_rate=0.3).rate(v, "hero", rng=rng_for(2, 5)).good
    )
    with pytest.raises(ValueError, match="noisy rater needs an rng"):
        rater.rate(v, "hero")


def test_best_noise_statistics():
    # two good images, scores 0.5 and 0.6, noise std 0.1: P(pick the better) = Phi(0.1 / (0.1 * sqrt 2))
    rater = SimulatedRater(best_noise=0.1)
    v = verdicts([1, 1], [0.5, 0.6])
    n = 4000
    picks = [rate_after(rater, None, v, rng_for(3, i)).best for i in range(n)]  # n first picks
    p = sum(b == 1 for b in picks) / n
    expected = 0.5 * (1 + math.erf((0.1 / (0.1 * math.sqrt(2))) / math.sqrt(2)))  # 0.760
    assert abs(p - expected) < 4 * math.sqrt(expected * (1 - expected) / n), p
    assert all(SimulatedRater().rate(v, "hero").best == 1 for _ in range(3))  # no noise: always the best


def test_d3po_pairs_only_within_groups():
    good = [1, 0, 0, 1, 1, 0, 1, 1]
    groups = [0, 0, 0, 1, 1, 1, 2, 2]
    fb = SimulatedRater().rate(verdicts(good), "d3po", groups=groups)
    assert fb.good == tuple(bool(g) for g in good) and fb.best is None
    assert fb.pairs == ((0, 1), (0, 2), (3, 5), (4, 5))  # group 2 is all good: no pair
    for w, b in fb.pairs:
        assert groups[w] == groups[b] and fb.good[w] and not fb.good[b]


def test_d3po_random_batches_pair_every_good_bad_combination_in_group():
    rater = SimulatedRater(flip_rate=0.25)
    rng = np.random.default_rng(0)
    for it in range(20):
        groups = rng.integers(0, 5, 32).tolist()
        fb = rater.rate(verdicts(rng.random(32) < 0.5), "d3po", groups=groups, rng=rng_for(0, it))
        expected = {
            (w, b)
            for w in range(32)
            for b in range(32)
            if groups[w] == groups[b] and fb.good[w] and not fb.good[b]
        }
        assert set(fb.pairs) == expected and len(fb.pairs) == len(expected)


def test_d3po_needs_groups_and_handles_no_good():
    r = SimulatedRater()
    with pytest.raises(ValueError, match="one group id per image"):
        r.rate(verdicts([1, 0]), "d3po")
    with pytest.raises(ValueError, match="one group id per image"):
        r.rate(verdicts([1, 0]), "d3po", groups=[0])
    assert r.rate(verdicts([0, 0]), "d3po", groups=[0, 0]).pairs == ()


def test_scalar_and_none_protocols():
    fb = SimulatedRater().rate(verdicts([1, 0, 1]), "scalar")
    assert fb.scores == (1.0, 0.0, 1.0) and fb.good == (True, False, True) and fb.best is None
    assert SimulatedRater(flip_rate=0.5).rate(verdicts([1, 0]), "none") == Feedback(good=())


def test_unknown_protocol_and_bad_settings():
    with pytest.raises(
        ConfigError, match=r"unknown feedback protocol 'heros' \(known: d3po, hero, none, scalar\)"
    ):
        SimulatedRater().rate(verdicts([1]), "heros")
    with pytest.raises(ConfigError, match="flip_rate"):
        SimulatedRater(flip_rate=-0.1)
    with pytest.raises(ConfigError, match="best_noise"):
        SimulatedRater(best_noise=-1)


def test_profiles():
    multi = [
        Verdict(success=False, score=0.1, reason="r", attrs={"profiles": {"green": {"success": True, "score": 0.9}, "snowy": {"success": False, "score": 0.2}}}),
        Verdict(success=True, score=0.8, reason="r", attrs={"profiles": {"green": {"success": False, "score": 0.3}, "snowy": {"success": True, "score": 0.7}}}),
    ]  # fmt: skip
    assert SimulatedRater("green").rate(multi, "hero") == Feedback(good=(True, False), best=0)
    assert SimulatedRater("snowy").rate(multi, "hero") == Feedback(good=(False, True), best=1)
    assert SimulatedRater().rate(multi, "hero") == Feedback(good=(False, True), best=1)
    with pytest.raises(
        ConfigError,
        match=r"rater profile 'autumn' is not judged by this oracle \(profiles it judges: green, snowy\)",
    ):
        SimulatedRater("autumn").rate(multi, "hero")
    # an oracle built for one profile: its verdicts already are that rater's judgement
    assert SimulatedRater("green").rate(verdicts([1, 0], [0.4, 0.9]), "hero") == Feedback(
        good=(True, False), best=0
    )
