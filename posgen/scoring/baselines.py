"""Reference predictors, whole rows ``(rows, L')`` with the seed window copied; ties go to the
smallest token. ``oracle``: h of the stored operands (100% on valid data; the far-rule answers
on a probe split). ``near-only``: the target most often seen after each k-token near context
in the fit split (its most common target for unseen contexts): about 1/m (far more on paper
seeding, whose test rows repeat train rows). ``majority``: the most common token per position
of the fit split (its overall most common beyond its length).
``local`` (probe splits): the stored token, a rule that never reads the far operand.

Worked example (near-only, k = 1): after a 3 the fit data shows 5 twice and 7 once.

>>> fit = np.array([[0, 3, 5, 3, 5, 3, 7]])
>>> near_only_predictions(fit[:, :3], near=1, window=1, modulus=17, fit_tokens=fit).tolist()
[[0, 3, 5]]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from posgen.generator import FAR_RULE_PAIRS, expected_targets, storage_dtype
from posgen.scoring.folder import load_reference, score_aligned
from posgen.scoring.metrics import ScoringError
from posgen.spec import TaskSpec

BASELINES: tuple[str, ...] = ("oracle", "near-only", "majority")
PROBE_BASELINES: tuple[str, ...] = ("oracle", "local")  # far-reliance 1 and 0


def oracle_predictions(spec: TaskSpec, tokens: np.ndarray) -> np.ndarray:
    """h of the stored operands at every position ``t >= w`` (seed window copied).

    >>> spec = TaskSpec(task="cot", train_length=8, test_length=8)
    >>> oracle_predictions(spec, np.array([[5, 1, 2, 3, 6, 0, 0, 0]])).tolist()
    [[5, 1, 2, 3, 11, 16, 14, 11]]
    """
    out = np.array(tokens, dtype=storage_dtype(spec.modulus), copy=True)
    step = max(1, FAR_RULE_PAIRS // max(1, tokens.shape[1] - spec.window))
    for first in range(0, tokens.shape[0], step):
        block = tokens[first : first + step]
        out[first : first + step, spec.window :] = expected_targets(spec, block)
    return out


def _near_column(tokens: np.ndarray, slot: int, near: int, window: int) -> np.ndarray:
    """Near operand ``slot`` of positions ``w .. L-1``, row-major: one column of the contexts."""
    length = tokens.shape[1]
    return tokens[:, window - near + slot : length - near + slot].reshape(-1).astype(np.int64)


def _most_common(groups: np.ndarray, targets: np.ndarray, modulus: int) -> tuple[np.ndarray, ...]:
    """For each group id that occurs, the most common target (ties: the smallest)."""
    keys, counts = np.unique(groups.astype(np.int64) * modulus + targets, return_counts=True)
    group, target = keys // modulus, keys % modulus
    order = np.lexsort((target, -counts, group))
    first = np.ones(order.size, dtype=bool)
    first[1:] = group[order][1:] != group[order][:-1]
    chosen = order[first]
    return group[chosen], target[chosen]


def _majority_token(values: np.ndarray, modulus: int) -> int:
    counts = np.bincount(values.reshape(-1).astype(np.int64), minlength=modulus)
    return int(counts.argmax())


def near_only_predictions(
    tokens: np.ndarray, *, near: int, window: int, modulus: int, fit_tokens: np.ndarray
) -> np.ndarray:
    """The near-context majority predictor, fitted on ``fit_tokens``, applied to ``tokens``."""
    rows, length = tokens.shape
    fit_targets = fit_tokens[:, window:].reshape(-1).astype(np.int64)
    fitted = fit_targets.size
    # one id per distinct context, a column at a time: memory of one column, not (N, k)
    exact = modulus**near < 2**62  # the whole context as one base-m code
    ids = np.zeros(fitted + rows * (length - window), dtype=np.int64)
    for slot in range(near):
        column = np.concatenate(
            [_near_column(fit_tokens, slot, near, window), _near_column(tokens, slot, near, window)]
        )
        ids = ids * modulus + column
        if not exact:  # renumber: ids stay below the number of contexts
            ids = np.unique(ids, return_inverse=True)[1].reshape(-1)
    if exact:
        ids = np.unique(ids, return_inverse=True)[1].reshape(-1)
    fit_ids, query_ids = ids[:fitted], ids[fitted:]
    table = np.full(int(ids.max(initial=-1)) + 1, _majority_token(fit_targets, modulus))
    group, target = _most_common(fit_ids, fit_targets, modulus)  # none without fit rows
    table[group] = target
    out = np.array(tokens, dtype=storage_dtype(modulus), copy=True)
    out[:, window:] = table[query_ids].reshape(rows, length - window)
    return out


def majority_predictions(
    tokens: np.ndarray, *, window: int, modulus: int, fit_tokens: np.ndarray
) -> np.ndarray:
    """The most common token per position of ``fit_tokens``, applied to ``tokens``."""
    length = tokens.shape[1]
    fit_length = fit_tokens.shape[1]
    scored = fit_tokens[:, window:]
    per_position = np.full(length, _majority_token(scored, modulus), dtype=np.int64)
    reach = min(length, fit_length)
    if fit_tokens.shape[0]:
        positions = np.arange(window, reach)
        _, target = _most_common(
            np.broadcast_to(positions, (fit_tokens.shape[0], positions.size)).reshape(-1),
            fit_tokens[:, window:reach].reshape(-1).astype(np.int64),
            modulus,
        )
        per_position[window:reach] = target
    out = np.array(tokens, dtype=storage_dtype(modulus), copy=True)
    out[:, window:] = per_position[window:]
    return out


def baseline_predictions(
    kind: str, spec: TaskSpec, tokens: np.ndarray, fit_tokens: np.ndarray | None = None
) -> np.ndarray:
    """Whole-row predictions ``(rows, L')`` of baseline ``kind`` for ``tokens``; near-only and
    majority learn from ``fit_tokens``.

    >>> from posgen.generator import generate_split
    >>> spec = TaskSpec(task="recursive", train_size=50, val_size=5, test_size=5)
    >>> test = generate_split(spec, "test")
    >>> bool((baseline_predictions("oracle", spec, test) == test).all())
    True
    """
    if kind == "oracle":
        return oracle_predictions(spec, tokens)
    if kind == "local":
        return np.array(tokens, dtype=storage_dtype(spec.modulus), copy=True)
    if kind not in BASELINES:
        known = ", ".join(dict.fromkeys((*BASELINES, *PROBE_BASELINES)))
        raise ScoringError(f"unknown baseline {kind!r}; known: {known}")
    if fit_tokens is None:
        raise ScoringError(f"the {kind} baseline needs fit tokens (e.g. the train split)")
    frame = {"window": spec.window, "modulus": spec.modulus, "fit_tokens": fit_tokens}
    if kind == "near-only":
        return near_only_predictions(tokens, near=spec.near, **frame)
    return majority_predictions(tokens, **frame)


def baseline_scores(
    dataset_dir: Path, config: str, split: str = "test"
) -> dict[str, dict[str, float | None]]:
    """``{kind: {"id_accuracy", "ood_accuracy"}}`` of every baseline (fitted on train) on
    ``config``/``split``, for the data card."""
    reference = load_reference(dataset_dir, config, split)
    spec = reference.spec
    fit = load_reference(dataset_dir, config, "train").tokens
    out = {}
    for kind in BASELINES:
        predictions = baseline_predictions(kind, spec, reference.tokens, fit)
        out[kind] = score_aligned(reference, predictions).summary()
    return out
