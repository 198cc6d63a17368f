"""herobench: a reproducible benchmark for human-feedback-efficient online finetuning of
text-to-image diffusion models (HERO and its baselines) with oracle raters."""

__version__ = "0.1.0"
