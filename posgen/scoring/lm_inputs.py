"""Language-model inputs from POSGEN rows, the way the field trains on POSGEN.

Token id layout (vocabulary size ``m + 1``):

=========  ===========  =====================================================
id         meaning      in ``labels``
=========  ===========  =====================================================
0 .. m-1   the tokens   the token itself from position w on; -100 in the window
m          BOS          -100 (never predicted)
-100       ignore       the label of BOS and of the seed window x_0 .. x_{w-1}
=========  ===========  =====================================================

A row x_0 .. x_{L-1} becomes ``input_ids = [m, x_0, ..., x_{L-1}]`` (L + 1 ids),
``labels`` the same ids with -100 on BOS and the seed window, and ``attention_mask``
all ones. A Hugging Face causal LM shifts labels itself, so the logits at index i
predict ``input_ids[i + 1]``: ``logits[:, :-1].argmax(-1)`` is one prediction per row
position, aligned with ``tokens``, ready for :func:`posgen.scoring.score`
(:func:`predictions_from_logits` does exactly that).

Worked example (m = 17, w = 4):

>>> inputs = LMInputs(modulus=17, window=4)({"tokens": [0, 1, 2, 3, 6, 12]})
>>> inputs["input_ids"]
[17, 0, 1, 2, 3, 6, 12]
>>> inputs["labels"]
[-100, -100, -100, -100, -100, 6, 12]

With ``datasets``: ``ds.map(LMInputs.for_spec(spec), batched=True, remove_columns=["tokens"])``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from posgen.spec import TaskSpec

IGNORE_INDEX = -100
"""Label value the Hugging Face losses skip."""


def vocab_size(spec: TaskSpec) -> int:
    """Embedding rows a model needs: the m tokens and BOS (id m)."""
    return spec.modulus + 1


def lm_arrays(tokens: np.ndarray, modulus: int, window: int) -> dict[str, np.ndarray]:
    """``input_ids``, ``labels``, ``attention_mask`` (int64, ``(rows, L + 1)``) for token rows.

    >>> lm_arrays(np.array([[0, 1, 2, 3, 6]]), modulus=17, window=4)["labels"].tolist()
    [[-100, -100, -100, -100, -100, 6]]
    """
    rows, length = tokens.shape
    input_ids = np.empty((rows, length + 1), dtype=np.int64)
    input_ids[:, 0] = modulus
    input_ids[:, 1:] = tokens
    labels = input_ids.copy()
    labels[:, : window + 1] = IGNORE_INDEX
    return {
        "input_ids": input_ids,
        "labels": labels,
        "attention_mask": np.ones_like(input_ids),
    }


@dataclass(frozen=True)
class LMInputs:
    """A ``datasets.map``-able function: rows with ``tokens`` -> language-model inputs.

    Works on single examples and on batches (``batched=True``); other columns are kept
    by ``datasets`` (drop ``tokens`` with ``remove_columns`` if wanted).
    """

    modulus: int
    window: int

    @classmethod
    def for_spec(cls, spec: TaskSpec) -> LMInputs:
        """The inputs of ``spec``'s data: BOS id m, labels ignored on the first w tokens."""
        return cls(modulus=spec.modulus, window=spec.window)

    def row(self, tokens: Any) -> dict[str, list[int]]:
        """The inputs of one row of tokens."""
        values = np.asarray(tokens).tolist()
        input_ids = [self.modulus, *values]
        labels = [IGNORE_INDEX] * (self.window + 1) + values[self.window :]
        return {"input_ids": input_ids, "labels": labels, "attention_mask": [1] * len(input_ids)}

    def __call__(self, example: dict[str, Any]) -> dict[str, Any]:
        tokens = example["tokens"]
        if len(tokens) == 0 or np.isscalar(tokens[0]):
            return self.row(tokens)
        rows = [self.row(row) for row in tokens]
        return {
            name: [row[name] for row in rows] for name in ("input_ids", "labels", "attention_mask")
        }


def predictions_from_logits(logits: Any) -> np.ndarray:
    """Teacher-forced argmax predictions ``(rows, L)`` from logits over ``input_ids``.

    ``logits`` is ``(rows, L + 1, vocab)`` (a numpy array or anything ``np.asarray``
    accepts, e.g. a CPU tensor); index i predicts ``input_ids[i + 1]`` = x_i.

    >>> logits = np.zeros((1, 3, 18)); logits[0, 0, 5] = logits[0, 1, 9] = 1
    >>> predictions_from_logits(logits).tolist()
    [[5, 9]]
    """
    array = np.asarray(logits)
    return array[:, :-1].argmax(axis=-1)
