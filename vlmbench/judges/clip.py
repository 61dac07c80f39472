"""The CLIP judge of VLM-RM (Rocamonde et al. 2023): a frame's reward is how close its CLIP image
embedding lies to the task's goal prompts, optionally measured along the baseline-to-goal direction:

    R(x) = 1 - 1/2 * ||(x - g) P||^2,   P = alpha * d d^T / ||d||^2 + (1 - alpha) I,   d = g - b

x is the L2-normalised image embedding; g (b) is the mean of the L2-normalised goal (baseline)
prompt embeddings, renormalised to unit length as in the paper. So with alpha = 0 the reward is
exactly the cosine similarity x.g, and with alpha = 1 only the component of x - g along d counts.

torch and open_clip are imported on first use. A loaded model is shared by all judges in the
process that use the same weights on the same device (e.g. a judge and its alpha variants).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from contextlib import nullcontext
from dataclasses import replace
from functools import cache, cached_property
from pathlib import Path

import numpy as np
from pydantic import Field

from vlmbench.errors import VlmbenchError
from vlmbench.judges.base import (
    COMPARE_TEMPERATURE, Answer, Frame, Judge, JudgeParams, Provenance, Question, prompt_hash,
)
from vlmbench.specs.task import TaskSpec


class ClipParams(JudgeParams):
    model: str = Field(description="open_clip architecture, e.g. 'ViT-bigG-14'")
    pretrained: str | None = Field(
        default=None, description="open_clip pretrained tag, e.g. 'laion2b_s39b_b160k'; None: random weights"
    )
    checkpoint: str | None = Field(
        default=None,
        description="local weights file, used instead of downloading pretrained (whose tag still sets the "
        "image preprocessing)",
    )
    config_path: str | None = Field(
        default=None,
        alias="model_config",
        description="open_clip model-config JSON for an architecture not built in, named '<model>.json'",
    )
    alpha: float = Field(default=0.0, ge=0, le=1, description="goal-baseline regularisation strength")
    batch_size: int = Field(default=32, gt=0, description="frames per image-encoder forward pass")
    device: str = Field(default="auto", description="torch device; 'auto': cuda when available, else cpu")
    cache_size: int = Field(default=100_000, ge=0, description="image embeddings kept (least recently used go)")
    compare_temperature: float = Field(default=0.0, ge=0, description=COMPARE_TEMPERATURE)


def _weights_error(model: str, weights: str, reason: str) -> VlmbenchError:
    return VlmbenchError(
        f"the weights for {model}/{weights} could not be downloaded or found ({' '.join(reason.split())}); "
        "point at a local file with `checkpoint: /path/to/file` in the judge YAML, or pre-populate the "
        "Hugging Face/open_clip cache and set HF_HUB_OFFLINE=1"
    )


@cache
def _load(model: str, pretrained: str | None, checkpoint: str | None, config_path: str | None, device: str):
    """(model, tokenizer) for these weights on this device, loaded once per process."""
    import open_clip

    checkpoint = checkpoint and str(Path(checkpoint).expanduser())
    if config_path is not None:
        path = Path(config_path).expanduser()
        if not path.is_file() or path.stem != model:
            raise VlmbenchError(f"model_config {config_path}: expected an existing file named '{model}.json'")
        open_clip.add_model_config(path)
    if model not in open_clip.list_models():
        raise VlmbenchError(
            f"unknown open_clip model '{model}'; for a custom architecture set model_config: /path/to/{model}.json"
        )
    tag = open_clip.get_pretrained_cfg(model, pretrained) if pretrained else {}
    weights = None
    if checkpoint is not None:
        if not Path(checkpoint).is_file():
            raise _weights_error(model, pretrained or Path(checkpoint).name, f"no file {checkpoint}")
        weights = checkpoint
    elif pretrained is not None:
        if not tag:
            known = ", ".join(open_clip.list_pretrained_tags_by_model(model)) or "none"
            raise _weights_error(model, pretrained, f"not a pretrained tag of {model}; known: {known}")
        try:
            weights = open_clip.download_pretrained(tag)
        except Exception as exc:  # noqa: BLE001 - network and hub errors come in many types
            raise _weights_error(model, pretrained, f"{type(exc).__name__}: {exc}") from None
    preprocess = {k: tag[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in tag}
    try:
        net = open_clip.create_model(
            model, pretrained=weights, device=device,
            force_quick_gelu=tag.get("quick_gelu", False), force_preprocess_cfg=preprocess,
        )
    except Exception as exc:  # noqa: BLE001 - a bad weights file fails in many ways
        raise VlmbenchError(f"could not build {model} from {weights or 'random weights'}: {exc}") from None
    return net.eval(), open_clip.get_tokenizer(model)


class ClipJudge(Judge):
    """Scores frames by CLIP similarity to the goal prompts (VLM-RM); compares by score differences."""

    answers = frozenset({Question.SCORE})
    version = "1"
    Params = ClipParams

    def __init__(self, name: str, params: ClipParams):
        super().__init__(name, params)
        self._targets: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}  # prompts -> (g, unit d)
        self._images: OrderedDict[str, np.ndarray] = OrderedDict()  # content hash -> embedding

    def describe_model(self) -> str:
        p = self.params
        return f"{p.model}/{p.pretrained or (Path(p.checkpoint).name if p.checkpoint else 'random')}"

    @cached_property
    def device(self) -> str:
        if self.params.device != "auto":
            return self.params.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    @property
    def model(self):
        """The open_clip model, loaded on first use."""
        return self._loaded()[0]

    def _loaded(self):
        p = self.params
        return _load(p.model, p.pretrained, p.checkpoint, p.config_path, self.device)

    def warm_up(self) -> None:
        self.model  # noqa: B018 - loads the weights (or raises the offline error) before any training

    def clear_cache(self) -> None:
        self._images.clear()

    def preprocess(self, pixels: list[np.ndarray]):
        """uint8 HxWx3 frames -> the model's input batch on its device (resize, center crop, normalise)."""
        import torch

        by_shape: dict[tuple, list[int]] = {}
        for i, frame in enumerate(pixels):
            by_shape.setdefault(frame.shape, []).append(i)
        parts = [self._resize_crop(np.stack([pixels[i] for i in idx])) for idx in by_shape.values()]
        order = [i for idx in by_shape.values() for i in idx]
        x = parts[0] if len(parts) == 1 else torch.cat(parts)[torch.from_numpy(np.argsort(order))]
        cfg = self.model.visual.preprocess_cfg
        mean = torch.tensor(cfg["mean"], device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(cfg["std"], device=x.device).view(1, 3, 1, 1)
        return ((x - mean) / std).contiguous()  # NCHW, not the channels-last layout of the permuted frames

    def _resize_crop(self, batch: np.ndarray):
        import torch
        import torch.nn.functional as F

        cfg = self.model.visual.preprocess_cfg
        th, tw = (cfg["size"],) * 2 if isinstance(cfg["size"], int) else cfg["size"]
        x = torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2).float().div_(255)
        h, w = x.shape[-2:]
        if cfg["resize_mode"] == "squash":
            size = (th, tw)
        elif cfg["resize_mode"] == "shortest":
            scale = max(th / h, tw / w)
            size = (max(th, int(h * scale)), max(tw, int(w * scale)))
        else:
            raise VlmbenchError(f"{self.describe_model()}: resize_mode '{cfg['resize_mode']}' is not supported")
        if size != (h, w):
            x = F.interpolate(x, size=size, mode=cfg["interpolation"], antialias=True).clamp_(0, 1)
        top, left = round((size[0] - th) / 2), round((size[1] - tw) / 2)
        return x[..., top : top + th, left : left + tw]

    def _encode(self, encode, inputs) -> np.ndarray:
        """L2-normalised float32 embeddings of a batch, without gradients (and in float16 on cuda)."""
        import torch

        on_cuda = torch.device(self.device).type == "cuda"
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16) if on_cuda else nullcontext():
            out = encode(inputs).double()
        return torch.nn.functional.normalize(out, dim=-1).float().cpu().numpy()

    def _prompt(self, prompts: list[str]) -> np.ndarray:
        model, tokenizer = self._loaded()
        embeddings = self._encode(model.encode_text, tokenizer(prompts).to(self.device))
        mean = embeddings.astype(np.float64).mean(axis=0)
        return mean / np.linalg.norm(mean)

    def _target(self, task: TaskSpec) -> tuple[np.ndarray, np.ndarray]:
        """(g, d / ||d||) for the task's prompts, computed once (d is unused, and 0, when alpha = 0)."""
        key = (tuple(task.prompts.goal), tuple(task.prompts.baseline))
        if key not in self._targets:
            g = self._prompt(task.prompts.goal)
            direction = np.zeros_like(g)
            if self.params.alpha > 0:
                d = g - self._prompt(task.prompts.baseline)
                if np.linalg.norm(d) < 1e-6:
                    raise VlmbenchError(f"task '{task.id}': the goal and baseline prompts embed identically")
                direction = d / np.linalg.norm(d)
            self._targets[key] = (g, direction)
        return self._targets[key]

    def _rewards(self, g: np.ndarray, u: np.ndarray, x: np.ndarray) -> np.ndarray:
        """R for each row of x; ||vP||^2 = (1 - alpha)^2 ||v||^2 + alpha (2 - alpha) (v.u)^2 with v = x - g."""
        a, v = self.params.alpha, x.astype(np.float64) - g
        return 1 - 0.5 * ((1 - a) ** 2 * np.einsum("ij,ij->i", v, v) + a * (2 - a) * (v @ u) ** 2)

    def _score(self, task: TaskSpec, frames: list[Frame]) -> list[Answer]:
        p = self.params
        if p.alpha > 0 and not task.prompts.baseline:
            raise VlmbenchError(
                f"task '{task.id}' has no prompts.baseline, which judge '{self.name}' needs for alpha={p.alpha}"
            )
        provenance = Provenance(
            self.name, self.version, self.describe_model(),
            prompt_hash(task.prompts.goal, task.prompts.baseline, p.alpha),
        )
        keys = [None if f.pixels is None else f.content_hash() for f in frames]
        embeddings, cost = self._embeddings(frames, keys)
        rewards: dict[str, float] = {}
        if embeddings:
            g, u = self._target(task)
            rewards = dict(zip(embeddings, self._rewards(g, u, np.stack(list(embeddings.values())))))
        out = []
        for key in keys:
            if key is None:
                out.append(Answer(Question.SCORE, None, provenance, abstain_reason="the frame has no pixels"))
                continue
            first = cost.pop(key, None)  # an encoded frame's cost goes to its first occurrence
            answer_provenance = replace(provenance, seconds=first or 0.0, cached=first is None)
            out.append(Answer(Question.SCORE, float(rewards[key]), answer_provenance))
        return out

    def embed(self, frames: list[Frame]) -> np.ndarray:
        """Normalised image embeddings (n, embedding_dim), through the same cache as scoring."""
        keys = [f.content_hash() for f in frames]
        embeddings, _ = self._embeddings(frames, keys)
        return np.stack([embeddings[key] for key in keys])

    @property
    def embedding_dim(self) -> int:
        return int(self.model.visual.output_dim)

    def _embeddings(self, frames: list[Frame], keys: list[str | None]) -> tuple[dict, dict]:
        """Embeddings by content hash (cached or encoded in batches), and seconds per encoded frame."""
        embeddings: dict[str, np.ndarray] = {}
        todo: dict[str, np.ndarray] = {}
        for key, frame in zip(keys, frames):
            if key is None or key in embeddings or key in todo:
                continue
            if key in self._images:
                self._images.move_to_end(key)
                embeddings[key] = self._images[key]
            else:
                pixels = frame.pixels
                if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
                    raise ValueError(f"the CLIP judge needs uint8 HxWx3 pixels, got {pixels.dtype} {pixels.shape}")
                todo[key] = pixels
        cost: dict[str, float] = {}
        batch = list(todo.items())
        for start in range(0, len(batch), self.params.batch_size):
            chunk = batch[start : start + self.params.batch_size]
            began = time.perf_counter()
            encoded = self._encode(self.model.encode_image, self.preprocess([px for _, px in chunk]))
            share = (time.perf_counter() - began) / len(chunk)
            for (key, _), embedding in zip(chunk, encoded):
                embeddings[key], cost[key] = embedding, share
                self._remember(key, embedding)
        return embeddings, cost

    def _remember(self, key: str, embedding: np.ndarray) -> None:
        if self.params.cache_size == 0:
            return
        self._images[key] = embedding
        while len(self._images) > self.params.cache_size:
            self._images.popitem(last=False)
