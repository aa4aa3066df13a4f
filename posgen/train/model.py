"""Build, save and load the one model of every run: a stock ``LlamaForCausalLM``.

:func:`llama_for` builds it from a config (nothing downloaded) for a resolved position
encoding: its training ``rope_parameters``, its attention implementation (``sdpa`` unless
the encoding registers one), and its input-position module attached
(:mod:`posgen.train.absolute`). :func:`save_model` writes transformers' ``save_pretrained``
folder plus ``position_encoding.json``; :func:`load_model` rebuilds the same model from
them, so a saved run predicts exactly what it predicted before saving (tested for every
built-in encoding).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.utils import logging as hf_logging

from posgen.train import absolute
from posgen.train.alibi import PARAMETERS_ATTRIBUTE
from posgen.train.encoding import Lengths, PERequest
from posgen.train.registry import ResolvedPE, resolve
from posgen.train.rope import use_frequencies

PE_FILE = "position_encoding.json"


def llama_for(
    pe: ResolvedPE,
    vocab: int,
    bos: int,
    hidden: int,
    heads: int,
    layers: int,
    intermediate: int,
    evaluation: bool = False,
) -> LlamaForCausalLM:
    """A freshly initialised Llama (from the current torch RNG) with ``pe`` built in."""
    hf_logging.set_verbosity_error()  # custom rope types have no transformers validator
    extra: dict[str, Any] = {}
    if pe.encoding.attention is not None:
        extra["attn_implementation"] = pe.encoding.attention
        extra[PARAMETERS_ATTRIBUTE] = dict(pe.parameters)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=pe.max_positions,
        rope_parameters=pe.rope(evaluation),
        bos_token_id=bos,
        eos_token_id=None,
        pad_token_id=None,
        tie_word_embeddings=False,
        use_cache=False,
        **extra,
    )
    model = LlamaForCausalLM(config)
    factory = pe.encoding.input_positions
    if factory is not None:
        module = factory(pe.parameters, pe.lengths, hidden, pe.table_positions)
        absolute.attach(model, module)
    return model


def save_model(model: LlamaForCausalLM, pe: ResolvedPE, folder: Path) -> None:
    """``save_pretrained`` into ``folder`` plus the encoding's request and lengths."""
    hf_logging.disable_progress_bar()
    model.save_pretrained(folder)
    spec = {
        "request": pe.request.model_dump(mode="json"),
        "lengths": {
            "train": pe.lengths.train,
            "test": pe.lengths.test,
            "head_dim": pe.lengths.head_dim,
            "heads": pe.lengths.heads,
        },
        "evaluation_rope": pe.rope(True),
    }
    (Path(folder) / PE_FILE).write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")


def load_model(folder: Path) -> tuple[LlamaForCausalLM, ResolvedPE]:
    """The model :func:`save_model` wrote, with its evaluation frequencies, in eval mode."""
    from safetensors.torch import load_file

    folder = Path(folder)
    spec = json.loads((folder / PE_FILE).read_text())
    pe = resolve(PERequest.model_validate(spec["request"]), Lengths(**spec["lengths"]))
    config = LlamaConfig.from_pretrained(folder)
    model = llama_for(
        pe,
        vocab=config.vocab_size,
        bos=config.bos_token_id,
        hidden=config.hidden_size,
        heads=config.num_attention_heads,
        layers=config.num_hidden_layers,
        intermediate=config.intermediate_size,
    )
    state = load_file(folder / "model.safetensors")
    model.load_state_dict(state, strict=True)
    use_frequencies(model, spec["evaluation_rope"])
    model.eval()
    return model, pe


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: input-position tables without weight decay, everything else with it.

    Without the exemption, decoupled weight decay would shrink table rows that training
    never reaches (positions past L).
    """
    exempt = {id(p) for p in absolute.no_decay_parameters(model)}
    decayed = [p for p in model.parameters() if id(p) not in exempt]
    groups: list[dict[str, Any]] = [{"params": decayed, "weight_decay": weight_decay}]
    if exempt:
        groups.append(
            {
                "params": [p for p in model.parameters() if id(p) in exempt],
                "weight_decay": 0.0,
            }
        )
    return groups
