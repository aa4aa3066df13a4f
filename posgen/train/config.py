"""Training presets: the model and schedule of a ``posgen train`` run (no torch needed).

``paper`` is the authors' setup (their code: a t5-small-sized decoder, AdamW, one-cycle
cosine schedule stepped per batch, 150 epochs, 5 seeds), meant for a GPU. ``cpu`` is
sized so that the paper's four position embeddings (2 data folders x 3 tasks x 3 seeds, 2
trainings each) ran in about 40 minutes on two CPU cores.

A Llama block differs from the authors' T5 decoder block: attention logits are scaled by
``1/sqrt(d_head)`` (T5 folds that into its initialisation), the feed-forward is SwiGLU
(three matrices) instead of ReLU (two), there is no dropout (t5-small has 0.1), and the
rotary pairs are dimensions ``(i, i + d/2)`` (rotate-half) instead of adjacent ones, a fixed
permutation of the head dimensions that leaves the embedding's frequencies unchanged.

>>> preset("cpu", epochs=1).epochs
1
>>> preset("paper").seeds
[5549, 4955, 42, 3701, 49]
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

PAPER_SEEDS = [5549, 4955, 42, 3701, 49]
"""The authors' five seeds."""


class TrainConfig(BaseModel):
    """Model size and optimisation of one run; every field can be overridden by a flag."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    layers: int = Field(ge=1, le=64, description="Decoder layers.")
    hidden: int = Field(ge=8, le=8192, description="Model width d_model.")
    heads: int = Field(ge=1, le=128, description="Attention heads (hidden / heads must be even).")
    intermediate: int = Field(ge=1, le=65536, description="Feed-forward width d_ff.")
    lr: float = Field(gt=0, le=1.0, description="Peak learning rate (AdamW).")
    weight_decay: float = Field(ge=0, le=1.0, description="AdamW weight decay.")
    warmup: float = Field(gt=0, lt=1.0, description="One-cycle warm-up fraction of steps.")
    batch_size: int = Field(ge=1, le=65536, description="Training rows per step.")
    eval_batch_size: int = Field(ge=1, le=65536, description="Rows per evaluation forward.")
    epochs: int = Field(ge=1, le=10_000, description="Passes over the train split.")
    eval_every: int = Field(1, ge=1, le=10_000, description="Validate every this many epochs.")
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many steps (smoke runs); the schedule spans them."
    )
    seeds: list[int] = Field(min_length=1, description="Seeds `make results` runs.")

    @model_validator(mode="after")
    def _even_heads(self) -> TrainConfig:
        if self.hidden % self.heads or (self.hidden // self.heads) % 2:
            raise ValueError(
                f"hidden ({self.hidden}) must be a multiple of heads ({self.heads}) "
                "with an even head dimension (rotary pairs)"
            )
        return self


PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "layers": 6,
        "hidden": 512,
        "heads": 8,
        "intermediate": 2048,
        "lr": 2e-4,
        "weight_decay": 0.01,
        "warmup": 0.1,
        "batch_size": 128,
        "eval_batch_size": 64,
        "epochs": 150,
        "eval_every": 2,
        "seeds": PAPER_SEEDS,
    },
    "cpu": {
        "layers": 2,
        "hidden": 64,
        "heads": 4,
        "intermediate": 256,
        "lr": 3e-3,
        "weight_decay": 0.01,
        "warmup": 0.1,
        "batch_size": 64,
        "eval_batch_size": 250,
        "epochs": 3,
        "eval_every": 1,
        "seeds": PAPER_SEEDS[:3],
    },
}

PresetName = Literal["paper", "cpu"]


def known_preset(name: str) -> str:
    """``name`` if it names a preset, else a ValueError listing the presets."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; use one of {', '.join(PRESETS)}")
    return name


def preset(name: str, **overrides: Any) -> TrainConfig:
    """The preset ``name`` with fields overridden (``None`` values are ignored)."""
    known_preset(name)
    fields = {**PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}}
    return TrainConfig(**fields)
