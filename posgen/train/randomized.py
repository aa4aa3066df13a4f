"""Randomized positions (Ruoss et al. 2023), combinable with any position encoding.

A row of T tokens gets position ids drawn without replacement from ``0 .. R-1`` and sorted,
with R larger than the training rows' T = L+1 (``auto``: R = L'+1, the test rows' length,
so every test position has been seen in training). posgen draws for every row in training
*and* in evaluation (validation and test), so a model never meets positions from another
distribution (a choice of this implementation; consecutive ids at evaluation would be the
other reading). The ids go to the rotary embedding, the attention bias and the absolute
embeddings alike.

Every draw is counter-based: a ``numpy`` generator keyed by ``(seed, phase, step or split,
row)`` (:class:`numpy.random.SeedSequence`), so the positions of a row do not depend on
batch size, order or device.

>>> positions = RandomPositions(seed=7, range_size=20)
>>> ids = positions.training(step=0, rows=2, length=5)
>>> ids.shape, bool((ids[:, 1:] > ids[:, :-1]).all()), int(ids.max()) < 20
(torch.Size([2, 5]), True, True)
>>> bool((positions.training(0, 2, 5) == ids).all())
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

TRAINING, EVALUATION = 0, 1
SPLITS = {"validation": 1, "test": 2}
"""Counter keys of the evaluation splits."""


def sorted_positions(key: list[int], count: int, range_size: int) -> np.ndarray:
    """``count`` distinct positions from ``0 .. range_size-1``, ascending, keyed by ``key``."""
    if count > range_size:
        raise ValueError(f"cannot draw {count} distinct positions from {range_size}")
    rng = np.random.default_rng(np.random.SeedSequence(key))
    return np.sort(rng.choice(range_size, size=count, replace=False))


@dataclass(frozen=True)
class RandomPositions:
    """The randomized position ids of one run (``seed``) over the range ``0 .. range_size-1``."""

    seed: int
    range_size: int

    def _rows(self, keys: list[list[int]], length: int) -> torch.Tensor:
        out = np.stack([sorted_positions(key, length, self.range_size) for key in keys])
        return torch.from_numpy(out.astype(np.int64))

    def training(self, step: int, rows: int, length: int) -> torch.Tensor:
        """Position ids ``(rows, length)`` of training step ``step``'s batch."""
        return self._rows([[self.seed, TRAINING, step, row] for row in range(rows)], length)

    def evaluation(self, split: str, start: int, rows: int, length: int) -> torch.Tensor:
        """Position ids of rows ``start .. start+rows-1`` of an evaluation split."""
        code = SPLITS[split]
        keys = [[self.seed, EVALUATION, code, start + row] for row in range(rows)]
        return self._rows(keys, length)
