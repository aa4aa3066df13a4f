"""Build, save and load the model of every run: a stock ``LlamaForCausalLM`` with an encoding."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedModel
from transformers.utils import logging as hf_logging

from posgen.encodings import Lengths, PEError, PERequest, ResolvedPE, resolve
from posgen.encodings.builtin import PARAMETERS_ATTRIBUTE
from posgen.errors import UsageError, shown

PE_FILE = "position_encoding.json"
ATTRIBUTE = "position_embedding"
"""Name of the input-position module on the ``LlamaModel``."""
MODULE = "position_module"
"""Name of an encoding's attention module on each attention layer (and, shared, the model)."""
MODEL_FOLDER = "model"
"""A run folder's saved model (``--save-model``)."""


def _add_positions(
    module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    kwargs = dict(kwargs)
    if args:  # LlamaModel(input_ids, ...) called positionally
        kwargs["input_ids"], args = args[0], args[1:]
    input_ids = kwargs.pop("input_ids", None)
    embeds = kwargs.get("inputs_embeds")
    if embeds is None:
        embeds = module.embed_tokens(input_ids)
    position_ids = kwargs.get("position_ids")
    if position_ids is None:
        position_ids = torch.arange(embeds.shape[1], device=embeds.device)[None]
    added = getattr(module, ATTRIBUTE)(position_ids).to(embeds.dtype)
    kwargs["inputs_embeds"] = embeds + added
    kwargs["input_ids"] = None
    return args, kwargs


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
    """A freshly initialised Llama (from the current torch RNG) with ``pe``'s input-position
    module (:data:`ATTRIBUTE`) and attention modules (:data:`MODULE`)."""
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
    base = model.base_model
    if pe.encoding.input_positions is not None:
        table = pe.encoding.input_positions(pe.parameters, pe.lengths, hidden, pe.table_positions)
        setattr(base, ATTRIBUTE, table)
        base.register_forward_pre_hook(_add_positions, with_kwargs=True)
    factory = pe.encoding.attention_module
    if factory is not None and pe.encoding.shared_module:
        setattr(base, MODULE, factory(pe.parameters, pe.lengths))
        for layer in base.layers:  # unregistered: saved and trained once, through the model
            layer.self_attn.__dict__[MODULE] = getattr(base, MODULE)
    elif factory is not None:
        for layer in base.layers:
            setattr(layer.self_attn, MODULE, factory(pe.parameters, pe.lengths))
    return model


_CHECKED: set[str] = set()


def check_encoding(pe: ResolvedPE) -> None:
    """Run a training row (L+1 tokens) and an evaluation row (L'+1 tokens, evaluation
    frequencies) through a one-layer Llama: a failure or a non-finite output is a PEError."""
    lengths = pe.lengths
    key = json.dumps(
        [pe.name, pe.encoding.source, pe.training_key(), pe.rope(True), asdict(lengths)],
        sort_keys=True,
        default=str,
    )
    if key in _CHECKED:
        return
    small = replace(pe, randomized=None)  # an input table of L'+1 rows, not of R
    tokens = lengths.train + 1
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            model = llama_for(
                small, 4, 3, lengths.heads * lengths.head_dim, lengths.heads, 1, 8
            ).eval()
            for evaluation, tokens in ((False, lengths.train + 1), (True, lengths.test + 1)):
                if evaluation:
                    use_frequencies(model, pe.rope(True))
                ids = torch.zeros(1, tokens, dtype=torch.long)
                logits = model(input_ids=ids).logits
                if not bool(torch.isfinite(logits).all()):
                    raise ValueError("the model's outputs are not finite (NaN or Infinity)")
    except (Exception, SystemExit) as error:  # a plugin calling sys.exit too
        what = "" if isinstance(error, PEError) else f"{type(error).__name__}: "
        raise PEError(
            f"--pe {pe.label} ({pe.encoding.source}): the encoding fails on a row of {tokens} "
            f"tokens before training: {what}{shown(str(error), 300) or '(no message)'}"
        ) from None
    _CHECKED.add(key)


def use_frequencies(model: PreTrainedModel, parameters: dict[str, Any]) -> None:
    """Give ``model`` the rotary frequencies of ``parameters``; weights stay as they are."""
    base = model.base_model
    old = base.rotary_emb
    device = old.inv_freq.device
    base.config.rope_parameters = dict(parameters)
    base.config.max_position_embeddings = max(
        base.config.max_position_embeddings, parameters.get("original_max_position_embeddings", 0)
    )
    base.rotary_emb = type(old)(config=base.config).to(device)


def save_model(model: LlamaForCausalLM, pe: ResolvedPE, folder: Path) -> None:
    """``save_pretrained`` into ``folder`` plus the encoding's request and lengths."""
    hf_logging.disable_progress_bar()
    model.save_pretrained(folder)
    spec = {
        "request": pe.request.model_dump(mode="json"),
        "lengths": asdict(pe.lengths),
        "evaluation_rope": pe.rope(True),
    }
    (Path(folder) / PE_FILE).write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")


def load_model(folder: str | Path) -> tuple[LlamaForCausalLM, ResolvedPE]:
    """The model :func:`save_model` wrote in RUN/model (``folder``: RUN or RUN/model) and its
    encoding, with evaluation frequencies, in eval mode."""
    from safetensors.torch import load_file

    if not isinstance(folder, str | os.PathLike):
        raise UsageError(
            f"load_model: folder must be a run folder's path, not {type(folder).__name__}"
        )
    folder = Path(folder)
    if not (folder / PE_FILE).is_file() and (folder / MODEL_FOLDER / PE_FILE).is_file():
        folder = folder / MODEL_FOLDER
    if not (folder / PE_FILE).is_file():
        raise UsageError(
            f"{folder}: no saved model here (train with --save-model; it writes RUN/model)"
        )
    try:
        spec = json.loads((folder / PE_FILE).read_text())
        request, lengths = PERequest.model_validate(spec["request"]), Lengths(**spec["lengths"])
        evaluation_rope = spec["evaluation_rope"]
    except (ValueError, KeyError, TypeError) as error:
        problem = f"{type(error).__name__}: {error}".splitlines()[0]
        raise UsageError(f"{folder / PE_FILE}: not a posgen model's encoding ({problem})") from None
    try:
        pe = resolve(request, lengths)
    except PEError as error:
        raise UsageError(f"{folder}: {error}") from None
    for name in ("config.json", "model.safetensors"):
        if not (folder / name).is_file():
            raise UsageError(f"{folder / name}: missing (the saved model is incomplete)")
    try:  # the weights first: the config's sizes are checked against what the file holds
        weights = load_file(folder / "model.safetensors")
    except Exception as error:  # safetensors raises its own SafetensorError
        raise UsageError(f"{folder / 'model.safetensors'}: not readable ({shown(error)})") from None
    config = _config_of(folder, weights)
    model = llama_for(
        pe,
        vocab=config.vocab_size,
        bos=config.bos_token_id,
        hidden=config.hidden_size,
        heads=config.num_attention_heads,
        layers=config.num_hidden_layers,
        intermediate=config.intermediate_size,
    )
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as error:
        raise UsageError(f"{folder}: the weights do not fit config.json ({shown(error)})") from None
    use_frequencies(model, evaluation_rope)
    model.eval()
    return model, pe


def _config_of(folder: Path, weights: dict[str, torch.Tensor]) -> LlamaConfig:
    """``folder/config.json``, once its sizes agree with the ``weights``."""
    path = folder / "config.json"
    try:
        config = LlamaConfig.from_json_file(path)
    except (OSError, ValueError, TypeError, KeyError, ArithmeticError) as error:
        raise UsageError(f"{path}: not a Llama config ({shown(error)})") from None
    embed = weights.get("model.embed_tokens.weight")
    layers = {key.split(".")[2] for key in weights if key.startswith("model.layers.")}
    gate = weights.get("model.layers.0.mlp.gate_proj.weight")
    sizes = (config.vocab_size, config.hidden_size, config.num_hidden_layers)
    heads = config.num_attention_heads
    fits = (
        embed is not None
        and gate is not None
        and sizes == (*embed.shape, len(layers))
        and config.intermediate_size == gate.shape[0]
        and isinstance(heads, int)
        and 1 <= heads <= config.hidden_size
        and config.hidden_size % heads == 0
    )
    if not fits:
        raise UsageError(f"{path}: its sizes do not fit model.safetensors (edited or swapped)")
    return config


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: the encoding's own weights without weight decay (it would shrink rows and
    buckets training never reaches)."""
    exempt = [
        parameter
        for name, module in model.named_modules()
        if name.rpartition(".")[2] in (ATTRIBUTE, MODULE)
        for parameter in module.parameters()
    ]
    decayed = [p for p in model.parameters() if all(p is not q for q in exempt)]
    groups: list[dict[str, Any]] = [{"params": decayed, "weight_decay": weight_decay}]
    if exempt:
        groups.append({"params": exempt, "weight_decay": 0.0})
    return groups
