"""Methods: HERO, its ablations and its baselines. ``METHODS.get(name)()`` builds one (no arguments;
options come later through ``Method.setup``).

=============  ========  ==================================================================
name           protocol  what it is
=============  ========  ==================================================================
hero           hero      HERO: triplet-learned reward + DDPO + feedback-guided noise
hero-no-fgg    hero      HERO without feedback-guided generation (x_T ~ N(0, I))
hero-no-repr   hero      HERO without representation learning (reward = good/bad label)
ddpo           scalar    DDPO with the good/bad label as reward
d3po           d3po      D3PO: DPO on pairs of images sharing an initial noise
pretrained     none      the base model, untrained
enhanced       none      the base model with the task's enhanced prompts
dreambooth     hero      supervised LoRA finetuning on the good images
=============  ========  ==================================================================
"""

from __future__ import annotations

from functools import partial

from herobench.methods.base import Method
from herobench.methods.baselines import DreamBoothMethod, EnhancedMethod, PretrainedMethod
from herobench.methods.d3po import D3POMethod
from herobench.methods.ddpo import DDPOMethod
from herobench.methods.hero import HeroMethod
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
METHODS.register("d3po", D3POMethod)
METHODS.register("pretrained", PretrainedMethod)
METHODS.register("enhanced", EnhancedMethod)
METHODS.register("dreambooth", DreamBoothMethod)

DESCRIPTIONS = {
    "hero": "HERO: triplet-learned reward + DDPO + feedback-guided noise (protocol hero)",
    "hero-no-fgg": "HERO without feedback-guided generation: x_T ~ N(0, I) (ablation)",
    "hero-no-repr": "HERO without representation learning: reward = good/bad label (ablation)",
    "ddpo": "DDPO with the good/bad label as reward (protocol scalar)",
    "d3po": "D3PO: DPO on pairs of images sharing an initial noise (protocol d3po)",
    "pretrained": "the base model, untrained (no labels)",
    "enhanced": "the base model with the task's enhanced prompts (no labels)",
    "dreambooth": "DreamBooth-style supervised LoRA finetuning on the good images",
}

__all__ = ["METHODS", "Method", "DESCRIPTIONS"]
