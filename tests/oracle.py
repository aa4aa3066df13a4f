"""Slow, obviously-correct references written from POSGEN.md, independent of posgen.

Nothing here imports posgen's generator or seeding: plain loops over plain lists.
"""

from __future__ import annotations

import itertools


def far_positions(task: str, t: int, near: int, far: int) -> list[int]:
    """The far operand positions of x_t, straight from the table in POSGEN.md."""
    w = near + far
    if task == "recursive":
        start = t - w
    elif task == "cot":
        start = 0
    elif task == "semirecursive":
        start = (t - w) // 2
    else:
        raise ValueError(task)
    return list(range(start, start + far))


def grow_row(task: str, window: list[int], length: int, m: int, near: int, far: int) -> list[int]:
    """x_t = (sum of far operands + sum of near operands) mod m, one token at a time."""
    row = list(window)
    for t in range(len(window), length):
        total = sum(row[p] for p in far_positions(task, t, near, far))
        total += sum(row[t - near : t])
        row.append(total % m)
    return row


def authors_splits(
    task: str,
    m: int,
    near: int,
    far: int,
    train_length: int,
    test_length: int,
    train_size: int,
    val_size: int,
    test_size: int,
) -> dict[str, list[list[int]]]:
    """The authors' construction: a complete list grown from cycled sorted combinations."""
    w = near + far
    needed = max(train_size, val_size + test_size)
    windows = itertools.cycle(itertools.combinations(range(m), w))
    complete = [
        grow_row(task, list(next(windows)), max(train_length, test_length), m, near, far)
        for _ in range(needed)
    ]
    return {
        "train": [row[:train_length] for row in complete[:train_size]],
        "validation": [row[:test_length] for row in complete[:val_size]],
        "test": [row[:test_length] for row in complete[val_size : val_size + test_size]],
    }
