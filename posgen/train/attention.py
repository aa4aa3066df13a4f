"""Attention diagnostics of a trained model: one extra forward pass over a few test rows.

Per layer and region (ID, OOD): the mean attention entropy, the same over ``log(t + 1)`` and
the attention mass on the target's far operands. The probabilities come from the model's own
attention function called again with the identity as its values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from transformers import LlamaForCausalLM
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.llama.modeling_llama import eager_attention_forward

from posgen.tasks import dependency_matrix
from posgen.train.run_record import AttentionDiagnostics, AttentionLayer, AttentionRegion

ROWS = 8  # test rows of the diagnostic pass (the first ones of the split)


class NotMeasurable(ValueError):
    """An attention function that cannot be called with identity values."""


@contextmanager
def _recording(model: LlamaForCausalLM, sink: list[torch.Tensor]) -> Iterator[None]:
    """Within it, every attention call of ``model`` appends its probabilities to ``sink``."""
    name = model.config._attn_implementation
    had_local = name in ALL_ATTENTION_FUNCTIONS._local_mapping
    previous = ALL_ATTENTION_FUNCTIONS._local_mapping.get(name)
    original: Callable[..., Any] = ALL_ATTENTION_FUNCTIONS.get(name, eager_attention_forward)

    def recorded(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                 *args: Any, **kwargs: Any) -> Any:  # fmt: skip
        batch, heads, length = value.shape[0], value.shape[1], key.shape[2]
        eye = torch.eye(length, dtype=query.dtype, device=query.device)
        probe, _ = original(module, query, key, eye.expand(batch, heads, length, length),
                            *args, **kwargs)  # fmt: skip
        if tuple(probe.shape) != (batch, query.shape[2], heads, length):
            raise NotMeasurable(f"its attention function returned {tuple(probe.shape)}")
        # (batch, T, heads, T) -> (batch, heads, T, T): row q holds query q's attention
        sink.append(probe.transpose(1, 2).float().cpu())
        return original(module, query, key, value, *args, **kwargs)

    ALL_ATTENTION_FUNCTIONS[name] = recorded
    try:
        yield
    finally:
        if had_local:
            ALL_ATTENTION_FUNCTIONS[name] = previous
        else:
            del ALL_ATTENTION_FUNCTIONS[name]


def far_mask(task: str, near: int, far: int, length: int) -> np.ndarray:
    """``(length, length + 1)`` bool: row t marks the inputs holding x_t's far operands
    (input i + 1 holds x_i; input 0 is BOS).

    >>> far_mask("cot", near=1, far=1, length=4).astype(int)[2:].tolist()
    [[0, 1, 0, 0, 0], [0, 1, 0, 0, 0]]
    """
    mask = np.zeros((length, length + 1), dtype=bool)  # j = 0 or L <= w: no row, no mark
    deps = dependency_matrix(task, length, near, far)[:, :far]
    mask[np.repeat(np.arange(near + far, length), far), deps.reshape(-1) + 1] = True
    return mask


def summarize(
    probabilities: torch.Tensor, far: np.ndarray, start: int, boundary: int, end: int
) -> dict[str, AttentionRegion | None]:
    """ID ``[start, boundary)`` and OOD figures of one layer's attention ``(rows, heads, T, T)``."""
    p = probabilities.double()
    logs = torch.where(p > 0, p.clamp_min(1e-300).log(), torch.zeros_like(p))
    entropy = -(p * logs).sum(-1).mean(dim=(0, 1))  # per query
    share = (p * torch.from_numpy(far[:, : p.shape[-1]]).double()).sum(-1).mean(dim=(0, 1))
    uniform = torch.log(torch.arange(1, p.shape[-1] + 1, dtype=torch.float64))
    has_far = bool(far[start:end].any())
    out: dict[str, AttentionRegion | None] = {}
    for region, (lo, hi) in {"id": (start, boundary), "ood": (boundary, end)}.items():
        hi = min(hi, p.shape[-2])
        if hi <= lo:
            out[region] = None
            continue
        values = entropy[lo:hi]
        ratio = values / uniform[lo:hi].clamp_min(1e-12)
        out[region] = AttentionRegion(
            entropy=float(values.mean()),
            normalized_entropy=min(1.0, max(0.0, float(ratio.mean()))),
            far_share=min(1.0, max(0.0, float(share[lo:hi].mean()))) if has_far else None,
            targets=int(p.shape[0] * (hi - lo)),
        )
    return out


@torch.no_grad()
def attention_diagnostics(
    model: LlamaForCausalLM,
    test: Any,
    device: torch.device,
    positions: Callable[[int, int, int], torch.Tensor] | None = None,
    question_ids: bool = False,
    rows: int = ROWS,
) -> AttentionDiagnostics:
    """Per-layer attention figures of ``model`` on the first ``rows`` test rows, in float32,
    with the inputs (and ``positions``, as :func:`~posgen.train.trainer.predict` takes them)."""
    from posgen.train.trainer import lm_tensors, position_inputs

    spec = test.spec
    ids = lm_tensors(test, rows=slice(0, rows), question_ids=question_ids)["input_ids"]
    position_ids = None if positions is None else positions(0, *ids.shape)[:, :-1]
    ids = ids[:, :-1]  # the last token is never an input of a scored prediction
    length = ids.shape[1]
    sink: list[torch.Tensor] = []
    was_training = model.training
    model.eval()
    try:
        with _recording(model, sink), torch.autocast(device.type, enabled=False):
            model(input_ids=ids.to(device), **position_inputs(position_ids, device))
    finally:
        model.train(was_training)
    far = far_mask(spec.task, spec.near, spec.far, length)
    layers = [
        AttentionLayer(layer=index, **summarize(p, far, spec.window, spec.train_length, length))
        for index, p in enumerate(sink)
    ]
    return AttentionDiagnostics(rows=int(ids.shape[0]), layers=layers)
