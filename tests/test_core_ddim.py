"""ddim_step_with_logprob against diffusers' DDIMScheduler.step and the Gaussian density."""

import math

import pytest
import torch
from diffusers import DDIMScheduler

from herobench.core.ddim import ddim_step_with_logprob


def make_scheduler(prediction_type="epsilon", steps=10, **kw):
    s = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=kw.pop("set_alpha_to_one", False),
        steps_offset=1,
        prediction_type=prediction_type,
        **kw,
    )
    s.set_timesteps(steps)
    return s


def tensors(seed=0, shape=(3, 4, 8, 8)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g), torch.randn(shape, generator=g)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("step", [0, 4, 9])
def test_matches_diffusers_step_and_gaussian_density(prediction_type, step):
    sched = make_scheduler(prediction_type)
    t = int(sched.timesteps[step])
    x, out, noise = tensors(step)
    eta = 1.0
    prev, log_prob = ddim_step_with_logprob(sched, out, t, x, eta, generator=torch.Generator().manual_seed(7))
    drawn = torch.randn(x.shape, generator=torch.Generator().manual_seed(7))
    ref = sched.step(out, t, x, eta=eta, variance_noise=drawn).prev_sample
    torch.testing.assert_close(prev, ref, rtol=1e-5, atol=1e-5)

    # density of prev under N(mean, std²) with mean = the noise-free step
    mean = sched.step(out, t, x, eta=eta, variance_noise=torch.zeros_like(x)).prev_sample
    prev_t = t - sched.config.num_train_timesteps // sched.num_inference_steps
    std = eta * sched._get_variance(t, prev_t).sqrt()
    expected = (
        torch.distributions.Normal(mean.double(), std.double()).log_prob(prev.double()).sum(dim=(1, 2, 3))
    )
    torch.testing.assert_close(log_prob.double(), expected, rtol=1e-4, atol=1e-2)
    assert log_prob.shape == (3,) and log_prob.dtype == torch.float32

    # scoring the stored sample reproduces the sampling-time value exactly
    _, rescored = ddim_step_with_logprob(sched, out, t, x, eta, prev_sample=prev)
    assert torch.equal(rescored, log_prob)


def test_last_step_uses_final_alpha_cumprod_like_diffusers():
    # with set_alpha_to_one=True the last step goes to alpha_prev = final_alpha_cumprod = 1 (ddpo-pytorch's
    # clamped lookup would use alphas_cumprod[0]); its std is then 0.
    sched = make_scheduler("epsilon", set_alpha_to_one=True)
    t = int(sched.timesteps[-1])
    x, out, _ = tensors(3)
    prev, log_prob = ddim_step_with_logprob(sched, out, t, x, 1.0, generator=torch.Generator().manual_seed(0))
    ref = sched.step(out, t, x, eta=1.0, variance_noise=torch.zeros_like(x)).prev_sample
    torch.testing.assert_close(prev, ref)  # std is 0 here: the step is deterministic
    # std = 0: log-prob defined as 0, finite, and gradients stay finite
    out.requires_grad_(True)
    _, lp = ddim_step_with_logprob(sched, out, t, x, 1.0, prev_sample=prev)
    assert torch.equal(lp.detach(), torch.zeros(3))
    lp.sum().backward()
    assert torch.isfinite(out.grad).all()


def test_eta_zero_is_deterministic_ddim():
    sched = make_scheduler("v_prediction")
    t = int(sched.timesteps[2])
    x, out, _ = tensors(5)
    a, lp_a = ddim_step_with_logprob(sched, out, t, x, 0.0, generator=torch.Generator().manual_seed(0))
    b, _ = ddim_step_with_logprob(sched, out, t, x, 0.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    torch.testing.assert_close(a, sched.step(out, t, x, eta=0.0).prev_sample, rtol=1e-5, atol=1e-5)
    assert torch.equal(lp_a, torch.zeros(3))


def test_batched_timesteps_equal_per_sample_calls():
    sched = make_scheduler("epsilon")
    x, out, _ = tensors(9)
    prev = x + 0.1 * out
    ts = sched.timesteps[[0, 5, 9]]
    _, batched = ddim_step_with_logprob(sched, out, ts, x, 1.0, prev_sample=prev)
    for i in range(3):
        _, single = ddim_step_with_logprob(
            sched, out[i : i + 1], int(ts[i]), x[i : i + 1], 1.0, prev_sample=prev[i : i + 1]
        )
        torch.testing.assert_close(batched[i : i + 1], single, rtol=0, atol=0)


def test_half_precision_logprob_is_of_the_stored_sample():
    sched = make_scheduler("epsilon")
    t = int(sched.timesteps[3])
    x, out, _ = tensors(11)
    x, out = x.half(), out.half()
    prev, lp = ddim_step_with_logprob(sched, out, t, x, 1.0, generator=torch.Generator().manual_seed(0))
    assert prev.dtype == torch.float16 and lp.dtype == torch.float32
    _, again = ddim_step_with_logprob(sched, out, t, x, 1.0, prev_sample=prev)
    assert torch.equal(lp, again)


def test_log_prob_gradient_points_to_the_sample():
    # d/d(mean) log N(prev; mean, std) = (prev - mean) / std² -- moving the prediction so the mean moves
    # towards prev must increase the log-prob
    sched = make_scheduler("sample")
    t = int(sched.timesteps[1])
    x, out, _ = tensors(13)
    prev, _ = ddim_step_with_logprob(sched, out, t, x, 1.0, generator=torch.Generator().manual_seed(0))
    out = out.clone().requires_grad_(True)
    _, lp = ddim_step_with_logprob(sched, out, t, x, 1.0, prev_sample=prev)
    lp.sum().backward()
    _, lp2 = ddim_step_with_logprob(sched, out.detach() + 1e-3 * out.grad.sign(), t, x, 1.0, prev_sample=prev)
    assert (lp2 > lp.detach()).all()


def test_errors():
    sched = DDIMScheduler()
    x, out, _ = tensors()
    with pytest.raises(ValueError, match="set_timesteps"):
        ddim_step_with_logprob(sched, out, 10, x, 1.0)
    sched.set_timesteps(5)
    with pytest.raises(ValueError, match="not both"):
        ddim_step_with_logprob(sched, out, 10, x, 1.0, prev_sample=x, generator=torch.Generator())
    assert math.isfinite(float(ddim_step_with_logprob(sched, out, 801, x, 1.0)[1][0]))
