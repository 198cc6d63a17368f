"""An open_clip model as the oracles' eyes: image and text features, zero-shot probabilities.

Preprocessing is done on tensors (resize the short side to the model's input size with bicubic
antialiasing, centre crop, normalise with the model's mean/std), which matches open_clip's own
``transforms`` up to PIL's resampling differences. ``load_clip`` builds the model from a local weight
file of the manifest (``oracles/weights.toml``); open_clip is imported there, never at module import.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from herobench.oracles.weights import WeightEntry, import_extra, load_manifest, resolve

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
# weights.toml `arch` of a custom open_clip model shipped as a folder (config + tokenizer + weight file)
LOCAL_DIR = "local-dir"


class ClipScorer:
    """A CLIP model (eval mode, no gradients) plus its tokenizer.

    Args:
        model: an open_clip ``CLIP`` (anything with ``encode_image``, ``encode_text``, ``logit_scale``).
        tokenizer: ``texts -> N×L`` token ids (``open_clip.get_tokenizer(arch)``).
        device: where the model runs.
        image_size: the model's square input size; mean, std: its normalisation.
        batch_size: images per forward pass (memory knob only).
    """

    def __init__(self, model, tokenizer, device: str | torch.device = "cpu", image_size: int = 224,
                 mean=OPENAI_MEAN, std=OPENAI_STD, batch_size: int = 64):
        self.model = model.to(device).eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.image_size = int(image_size)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.batch_size = batch_size

    @property
    def logit_scale(self) -> float:
        """CLIP's learned temperature (100 for trained models, ``1/0.07`` at random init)."""
        return float(self.model.logit_scale.exp().clamp(max=100.0))

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """``B×3×H×W`` in ``[0, 1]`` -> ``B×3×S×S`` normalised model input (S = ``image_size``)."""
        x = images.detach().to(torch.float32).clamp(0, 1)
        s = self.image_size
        h, w = x.shape[-2:]
        scale = s / min(h, w)
        nh, nw = max(s, round(h * scale)), max(s, round(w * scale))
        if (nh, nw) != (h, w):
            x = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
        top, left = (nh - s) // 2, (nw - s) // 2
        x = x[..., top:top + s, left:left + s]
        return (x - self.mean) / self.std

    @torch.no_grad()
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """``B×3×H×W`` in ``[0, 1]`` -> ``B×D`` unit-norm float32 features (CPU)."""
        # the image tower's input dtype: its first convolution's (open_clip's fp16/bf16 precision keeps
        # embeddings and norms in float32)
        tower = getattr(self.model, "visual", self.model)
        conv = next((m for m in tower.modules() if isinstance(m, torch.nn.Conv2d)), None)
        dtype = conv.weight.dtype if conv is not None else next(tower.parameters()).dtype
        out = []
        for s in range(0, images.shape[0], self.batch_size):
            x = self.preprocess(images[s:s + self.batch_size]).to(self.device)
            out.append(F.normalize(self.model.encode_image(x.to(dtype)).float(), dim=-1).cpu())
        return torch.cat(out) if out else torch.zeros(0, 0)

    @torch.no_grad()
    def text_features(self, texts: list[str] | tuple[str, ...]) -> torch.Tensor:
        """``N`` texts -> ``N×D`` unit-norm float32 features (CPU)."""
        ids = self.tokenizer(list(texts)).to(self.device)
        return F.normalize(self.model.encode_text(ids).float(), dim=-1).cpu()

    @torch.no_grad()
    def class_features(self, classes: list[str], templates: tuple[str, ...], **fmt) -> torch.Tensor:
        """Zero-shot classifier weights (CLIP's prompt ensembling): for each class the normalised mean
        of its template embeddings. ``templates`` use ``{c}`` for the class and any ``fmt`` keys."""
        rows = []
        for c in classes:
            feats = self.text_features([t.format(c=c, **fmt) for t in templates])
            rows.append(F.normalize(feats.mean(0), dim=-1))
        return torch.stack(rows)

    def probs(self, image_feats: torch.Tensor, text_feats: torch.Tensor) -> torch.Tensor:
        """``B×N`` softmax over the texts of ``logit_scale · cos``."""
        return (self.logit_scale * image_feats @ text_feats.T).softmax(dim=-1)


def load_clip(weight_id: str, device: str | torch.device = "cpu",
              manifest: dict[str, WeightEntry] | None = None, who: str = "this oracle") -> ClipScorer:
    """A :class:`ClipScorer` from the manifest's local weight file ``weight_id`` (its ``arch`` names the
    open_clip architecture). Raises a one-line ``HerobenchError`` when open_clip or the file is missing."""
    open_clip = import_extra("open_clip", "clip", who)
    manifest = load_manifest() if manifest is None else manifest
    path = resolve(weight_id, manifest)
    arch = manifest[weight_id].arch
    if arch == LOCAL_DIR:
        # a custom model: its open_clip_config.json and tokenizer lie next to the weight file (the folder is
        # read by open_clip's own 'local-dir:' schema; nothing is fetched)
        arch = f"local-dir:{path.parent}"
        model = open_clip.create_model(arch, device=device, require_pretrained=True)
    else:
        # a file path as `pretrained` is loaded as is: open_clip downloads only for a known tag name
        model = open_clip.create_model(arch, pretrained=str(path), device=device, require_pretrained=True)
    cfg = open_clip.get_model_preprocess_cfg(model)
    size = cfg.get("size", 224)
    size = size[0] if isinstance(size, list | tuple) else size
    return ClipScorer(model, open_clip.get_tokenizer(arch), device, size,
                      cfg.get("mean", OPENAI_MEAN), cfg.get("std", OPENAI_STD))
