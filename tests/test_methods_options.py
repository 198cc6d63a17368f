"""Every method's resolved option defaults and PPO/DPO settings, pinned as literals.

Written against the code before the shared option bases (issue 24, item 4) and kept after: the bases
(``methods.base.LoRAOptions`` and its subclasses) must not move any method's default -- they differ per
method (HERO lr 1e-3, DDPO 3e-4, D3PO 3e-5, ...), and a shared default silently taking over would change
what every run of that method trains. Also pins which option keys each method accepts (a key added by a
base would make old checkpoints' options differ) and the validation messages of the shared fields.
"""

from __future__ import annotations

import dataclasses

import pytest

from herobench.config import to_dict
from herobench.errors import ConfigError
from herobench.methods import METHODS

ATTN = ["to_q", "to_k", "to_v", "to_out.0"]
HERO = {
    "feedback_guided_generation": True, "representation_learning": True, "beta": 0.5, "sigma": 0.1,
    "reward_mode": "best", "encoder_epochs": 500, "feature_dim": 0, "encoder_lr": 1e-05, "triplet_margin": 0.5,
    "triplet_sampling": "all_pairs", "triplet_distance": "pairwise", "lora_rank": 4, "lora_targets": ATTN,
    "lr": 0.001, "n_train_timesteps": 5, "early_fraction": 1.0, "clip_range": 0.0001, "adv_clip": 5.0,
    "max_grad_norm": 1.0, "samples_per_step": 8, "train_micro_batch": 8, "eval_from_pool": False,
}
DDPO = {
    "lora_rank": 4, "lora_targets": ATTN, "lr": 0.0003, "n_train_timesteps": 0, "early_fraction": 1.0,
    "clip_range": 0.0001, "adv_clip": 5.0, "max_grad_norm": 1.0, "samples_per_step": 8, "train_micro_batch": 8,
    "advantages": "per_prompt",
}
OPTIONS = {
    "hero": HERO,
    "hero-no-fgg": HERO | {"feedback_guided_generation": False},
    "hero-no-repr": HERO | {"representation_learning": False},
    "hero-early": HERO | {"early_fraction": 0.5},
    "ddpo": DDPO,
    "ddpo-5steps": DDPO | {"n_train_timesteps": 5},
    "ddpo-early": DDPO | {"early_fraction": 0.5},
    "d3po": {
        "lora_rank": 4, "lora_targets": ATTN, "lr": 3e-05, "beta": 0.1, "images_per_noise": 7, "passes": 16,
        "reference": "initial", "ratio_clip": 0.1, "n_train_timesteps": 0, "max_grad_norm": 1.0,
        "pairs_per_step": 1, "train_micro_batch": 8,
    },
    "grpo": {
        "lora_rank": 4, "lora_targets": ATTN, "lr": 0.0003, "beta": 0.04, "clip_range": 0.0001, "adv_clip": 5.0,
        "max_grad_norm": 1.0, "timestep_fraction": 0.99, "std": "global", "steps_per_batch": 2,
        "shared_noise": False, "train_micro_batch": 8,
    },
    "reward-model": {
        "feature_dim": 0, "classifier_lr": 0.0001, "classifier_steps": 500, "classifier_batch": 64, "lora_rank": 4,
        "lora_targets": ATTN, "lr": 0.001, "n_train_timesteps": 5, "clip_range": 0.0001, "adv_clip": 5.0,
        "max_grad_norm": 1.0, "samples_per_step": 8, "train_micro_batch": 8,
    },
    "diffusion-nft": {
        "lora_rank": 4, "lora_targets": ATTN, "lr": 0.0003, "weight_decay": 0.0001, "max_grad_norm": 1.0,
        "beta": 1.0, "kl_beta": 0.0001, "adv_clip_max": 5.0, "advantages": "binary", "timestep_fraction": 0.99,
        "old_decay_flat_steps": 0, "old_decay_rate": 0.001, "old_decay_max": 0.5, "steps_per_batch": 1,
        "train_micro_batch": 8,
    },
    "diffusion-kto": {
        "lora_rank": 4, "lora_targets": ATTN, "lr": 0.0005, "lr_warmup_steps": 200, "weight_decay": 0.01,
        "max_grad_norm": 1.0, "beta": 1000.0, "lambda_desirable": 1.0, "lambda_undesirable": 1.0,
        "positive_ratio": 0.8, "empty_prompt_prob": 0.2, "train_batch": 8, "steps_per_iteration": 50,
    },
    "dreambooth": {
        "lora_rank": 4, "lora_targets": ATTN, "lr": 0.0001, "steps_per_iteration": 50, "train_batch": 8,
        "max_grad_norm": 1.0,
    },
    "pretrained": {},
    "enhanced": {},
}
OPTIONS["diffusion-nft-8steps"] = OPTIONS["diffusion-nft"] | {"steps_per_batch": 8}


def pg(lr: float, k: int, samples_per_step: int = 8, early_fraction: float = 1.0) -> dict:
    """A resolved ``PGConfig`` as a dict; the fields no method sets keep PGConfig's defaults."""
    return {"lr": lr, "n_train_timesteps": k, "clip_range": 0.0001, "adv_clip": 5.0, "max_grad_norm": 1.0,
            "train_micro_batch": 8, "inner_epochs": 1, "cfg_in_training": True,
            "samples_per_step": samples_per_step, "kl_rows": 8, "early_fraction": early_fraction}


# the PPO / DPO settings each policy-gradient method trains with on a 20-step sampler
PG_AT_20_STEPS = {
    "hero": pg(1e-3, 5), "hero-no-fgg": pg(1e-3, 5), "hero-no-repr": pg(1e-3, 5),
    "hero-early": pg(1e-3, 5, early_fraction=0.5),
    "ddpo": pg(3e-4, 20), "ddpo-5steps": pg(3e-4, 5), "ddpo-early": pg(3e-4, 20, early_fraction=0.5),
    "d3po": pg(3e-5, 20, samples_per_step=0),  # (D3PO's step count is pairs_per_step, not samples_per_step)
    "grpo": pg(3e-4, 19, samples_per_step=0),  # int(20 · 0.99): all but the last step
    "reward-model": pg(1e-3, 5),
}


def test_every_method_is_pinned():
    assert set(OPTIONS) == set(METHODS.names())


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_resolved_defaults(name):
    assert to_dict(METHODS.get(name)().resolve_options({})) == OPTIONS[name]


@pytest.mark.parametrize("name", sorted(PG_AT_20_STEPS))
def test_policy_gradient_settings(name):
    options = METHODS.get(name)().resolve_options({})
    assert dataclasses.asdict(options.pg_config(20)) == PG_AT_20_STEPS[name]


@pytest.mark.parametrize("name", sorted(PG_AT_20_STEPS))
def test_pg_config_takes_the_method_options(name):
    """An option the method and PGConfig share reaches the update (not a default of a base class)."""
    options = METHODS.get(name)().resolve_options({"lr": 0.125, "max_grad_norm": 0.5, "train_micro_batch": 3})
    cfg = options.pg_config(20)
    assert (cfg.lr, cfg.max_grad_norm, cfg.train_micro_batch) == (0.125, 0.5, 3)


# (method, option, value) -> the message, as each method words it today
MESSAGES = [
    ("hero", "lora_rank", 0, "method_options.lora_rank must be >= 1 (got 0)"),
    ("hero", "lr", 0.0, "method_options.lr must be > 0, got 0.0"),
    ("hero", "n_train_timesteps", 0, "method_options.n_train_timesteps must be >= 1, got 0"),
    ("hero", "samples_per_step", -1, "method_options.samples_per_step must be >= 0, got -1"),
    ("ddpo", "n_train_timesteps", -1, "method_options.n_train_timesteps must be >= 0 (got -1)"),
    ("ddpo", "early_fraction", 0.0, "method_options.early_fraction must be in (0, 1] (got 0.0)"),
    ("d3po", "max_grad_norm", 0.0, "method_options.max_grad_norm must be > 0, got 0.0"),
    ("d3po", "train_micro_batch", 0, "method_options.train_micro_batch must be >= 1, got 0"),
    ("grpo", "lr", 2.0, "method_options.lr must be in [1e-12, 1.0] (got 2.0)"),
    ("grpo", "lora_targets", [], "method_options.lora_targets must name at least one module"),
    ("reward-model", "n_train_timesteps", 0,
     "method_options.n_train_timesteps must be >= 1 (got 0); its range is [1, 1000]"),
    ("reward-model", "lora_rank", 0, "method_options.lora_rank must be >= 1 (got 0); its range is [1, 1024]"),
    ("diffusion-nft", "lr", 0.0, "method_options.lr must be > 0 (got 0.0)"),
    ("diffusion-kto", "weight_decay", -1.0, "method_options.weight_decay must be >= 0 (got -1.0)"),
    ("dreambooth", "lora_rank", 0, "method_options.lora_rank must be >= 1 (got 0)"),
]


@pytest.mark.parametrize(("name", "key", "value", "message"), MESSAGES)
def test_validation_messages(name, key, value, message):
    with pytest.raises(ConfigError) as e:
        METHODS.get(name)().resolve_options({key: value})
    assert str(e.value) == message


@pytest.mark.parametrize(("name", "key", "value"), [
    ("hero", "lr", 2.0), ("ddpo", "n_train_timesteps", 0), ("d3po", "n_train_timesteps", 0),
    ("diffusion-kto", "lr", 2.0),
])
def test_values_accepted(name, key, value):
    """Values some methods accept and others refuse stay as they were (no base narrows them)."""
    assert getattr(METHODS.get(name)().resolve_options({key: value}), key) == value
