"""Methods: HERO, its ablations and its baselines. ``METHODS.get(name)()`` builds one (no arguments;
options come later through ``Method.setup``).

=============  ========  ==================================================================
name           protocol  what it is
=============  ========  ==================================================================
hero           hero      HERO: triplet-learned reward + DDPO + feedback-guided noise
hero-no-fgg    hero      HERO without feedback-guided generation (x_T ~ N(0, I))
hero-no-repr   hero      HERO without representation learning (reward = good/bad label)
ddpo           scalar    DDPO with the good/bad label as reward (every denoising step, as published)
ddpo-5steps    scalar    DDPO on HERO's 5 random denoising steps per trajectory (equal compute)
ddpo-early     scalar    DDPO training only the first half of the denoising steps (labelled adaptation)
hero-early     hero      HERO training only the first half of the denoising steps (labelled adaptation)
d3po           d3po      D3PO: DPO on pairs of images sharing an initial noise
pretrained     none      the base model, untrained
enhanced       none      the base model with the task's enhanced prompts
dreambooth     hero      supervised LoRA finetuning on the good images
diffusion-nft  scalar    DiffusionNFT: forward-process RL, implicit +/- policies
diffusion-kto  scalar    Diffusion-KTO: KT utility of per-image labels vs the initial model
grpo           scalar    GRPO (Flow-GRPO, DanceGRPO): group advantages, PPO clip, KL to the initial model
reward-model   scalar    a classifier fit on every label so far; its P(good) is DDPO's reward (RLHF)
=============  ========  ==================================================================

``diffusion-nft-8steps`` (scalar) is DiffusionNFT with its batch split into 8 optimizer steps (its own
``steps_per_batch``): as many steps per label as DDPO and HERO take, at the same compute.
"""

from __future__ import annotations

from functools import partial

from herobench.methods.base import Method
from herobench.methods.baselines import DreamBoothMethod, EnhancedMethod, PretrainedMethod
from herobench.methods.d3po import D3POMethod
from herobench.methods.ddpo import DDPOMethod
from herobench.methods.diffusion_kto import DiffusionKTOMethod
from herobench.methods.diffusion_nft import DiffusionNFTMethod
from herobench.methods.grpo import GRPOMethod
from herobench.methods.hero import HeroMethod
from herobench.methods.reward_model import RewardModelMethod
from herobench.registry import Registry

METHODS: Registry = Registry("method")
METHODS.register("hero", partial(HeroMethod, name="hero"))
METHODS.register(
    "hero-no-fgg", partial(HeroMethod, name="hero-no-fgg", fixed={"feedback_guided_generation": False})
)
METHODS.register(
    "hero-no-repr", partial(HeroMethod, name="hero-no-repr", fixed={"representation_learning": False})
)
METHODS.register("ddpo", DDPOMethod)
METHODS.register("ddpo-5steps", partial(DDPOMethod, name="ddpo-5steps", fixed={"n_train_timesteps": 5}))
METHODS.register("ddpo-early", partial(DDPOMethod, name="ddpo-early", fixed={"early_fraction": 0.5}))
METHODS.register("hero-early", partial(HeroMethod, name="hero-early", fixed={"early_fraction": 0.5}))
METHODS.register("d3po", D3POMethod)
METHODS.register("pretrained", PretrainedMethod)
METHODS.register("enhanced", EnhancedMethod)
METHODS.register("dreambooth", DreamBoothMethod)
METHODS.register("diffusion-nft", DiffusionNFTMethod)
METHODS.register(
    "diffusion-nft-8steps", partial(DiffusionNFTMethod, name="diffusion-nft-8steps", fixed={"steps_per_batch": 8})
)
METHODS.register("diffusion-kto", DiffusionKTOMethod)
METHODS.register("grpo", GRPOMethod)
METHODS.register("reward-model", RewardModelMethod)

DESCRIPTIONS = {
    "hero": "HERO: triplet-learned reward + DDPO + feedback-guided noise (protocol hero)",
    "hero-no-fgg": "HERO without feedback-guided generation: x_T ~ N(0, I) (ablation)",
    "hero-no-repr": "HERO without representation learning: reward = good/bad label (ablation)",
    "ddpo": "DDPO with the good/bad label as reward (protocol scalar)",
    "ddpo-5steps": "DDPO on HERO's 5 random denoising steps per trajectory: equal compute per label (variant)",
    "ddpo-early": "DDPO training only the first half of the denoising steps, x_T side (labelled adaptation, "
                  "issue 22: GlyphWorld's policy gradient sits on the last two steps)",
    "hero-early": "HERO training only the first half of the denoising steps, x_T side (labelled adaptation, "
                  "issue 22)",
    "d3po": "D3PO: DPO on pairs of images sharing an initial noise (protocol d3po)",
    "pretrained": "the base model, untrained (no labels)",
    "enhanced": "the base model with the task's enhanced prompts (no labels)",
    "dreambooth": "DreamBooth-style supervised LoRA finetuning on the good images",
    "diffusion-nft": "DiffusionNFT: a denoising loss on the forward process contrasting implicit positive and "
                     "negative policies, no likelihoods (Zheng et al., ICLR 2026; protocol scalar)",
    "diffusion-nft-8steps": "DiffusionNFT with its batch split into 8 optimizer steps (the official "
                            "steps_per_batch knob, 2 in its OCR config): as many steps per label as DDPO, the "
                            "same compute (variant)",
    "diffusion-kto": "Diffusion-KTO: a Kahneman-Tversky utility of per-image good/bad labels against the "
                     "initial model, no pairs (Li et al., NeurIPS 2024; protocol scalar)",
    "grpo": "GRPO: group-normalised advantages, PPO clip, KL to the initial model "
            "(Flow-GRPO, Liu et al. 2025; DanceGRPO, Xue et al. 2025; protocol scalar)",
    "reward-model": "a classifier fit on every label so far, its P(good) as DDPO's reward: the plain RLHF "
                    "baseline (Lee et al. 2023; protocol scalar)",
}

__all__ = ["METHODS", "Method", "DESCRIPTIONS"]
