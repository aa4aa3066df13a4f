"""Every registered encoding, plugins included, is causal: a token changed at position t moves
no logit before t. The check catches an attention that ignores the mask (a test plugin)."""
# ruff: noqa: E402

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from posgen.encodings import ENCODINGS, Lengths, PERequest, resolve
from posgen.encodings.model import MODULE, llama_for

LENGTHS = Lengths(train=16, test=32, head_dim=8, heads=2)
T, CHANGED = 12, 7
GAPPED = torch.tensor([[0, 2, 3, 5, 9, 10, 14, 17, 20, 21, 28, 32]] * 2)

LEAKY = """
import torch
from transformers import AttentionInterface

from posgen.encodings import PositionEncoding


def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    weights = torch.softmax(query @ key.transpose(-1, -2) * scaling, dim=-1)  # no mask read
    return (weights @ value).transpose(1, 2).contiguous(), weights


AttentionInterface.register("leaky_attention", attention)  # and no AttentionMaskInterface entry
LEAKY = PositionEncoding(name="leaky", summary="reads the future", attention="leaky_attention")
"""


def future_effect(name: str, positions: torch.Tensor | None) -> tuple[float, float]:
    """The largest change of the logits before position ``CHANGED``, and from it on, when its
    token changes, in a tiny model of ``name`` (its learned weights moved off their start)."""
    torch.manual_seed(0)
    model = llama_for(resolve(PERequest(name=name), LENGTHS), 18, 17, 16, 2, 2, 32).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter_name, parameter in model.named_parameters():
            if MODULE in parameter_name:
                parameter.add_(0.5 * torch.randn(parameter.shape, generator=generator))
    ids = torch.randint(0, 17, (2, T), generator=generator)
    changed = ids.clone()
    changed[:, CHANGED] = (ids[:, CHANGED] + 1) % 17
    extra = {}
    if positions is not None:
        extra = {"position_ids": positions, "attention_mask": torch.ones_like(positions)}
    with torch.no_grad():
        before, after = (model(input_ids=row, **extra).logits for row in (ids, changed))
    delta = (after - before).abs()
    return delta[:, :CHANGED].max().item(), delta[:, CHANGED:].max().item()


@pytest.fixture
def plugins(plugin_site, readme_block):
    """The README's two plugins and the leaky one as modules on ``sys.path``."""
    plugin_site("mype.py", readme_block("# mype/__init__.py"))
    plugin_site("mybias.py", readme_block("# mybias/__init__.py"))
    plugin_site("leaky.py", LEAKY)


EVERY = [*ENCODINGS, "rope+logn", "yarn+logn", "learned+logn", "mype:BASE500", "mybias:LOGBIAS"]


@pytest.mark.parametrize("positions", [None, GAPPED], ids=["default-positions", "gapped-ids"])
@pytest.mark.parametrize("name", [*EVERY, "leaky:LEAKY"])
def test_every_encoding_is_causal_and_one_that_ignores_the_mask_is_caught(plugins, name, positions):
    before, after = future_effect(name, positions)
    if name == "leaky:LEAKY":
        assert before > 1e-3
    else:
        assert before <= 1e-6, f"{name}: logits before t moved by {before}"
        assert after > 1e-4  # the change does reach the logits from t on
