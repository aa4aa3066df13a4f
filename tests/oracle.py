"""Slow, obviously-correct references from docs/tasks.md in plain loops, independent of posgen
(``make bench`` times posgen against them too)."""

from __future__ import annotations

import functools
import hashlib
import itertools
import math

MASK = (1 << 64) - 1


def far_positions(task: str, t: int, near: int, far: int) -> list[int]:
    """The far operand positions of x_t, from the task table (docs/tasks.md, "The tasks")."""
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


def splitmix64(x: int) -> int:
    """The SplitMix64 finalizer on a Python int."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


def keyed_state(operands: list[int], m: int, key: int) -> int:
    """The keyed hash's state: base-m words of as many operands as fit 2^64, chained."""
    per_word = max(c for c in range(1, 65) if m**c <= 2**64)
    state = int.from_bytes(
        hashlib.sha256(f"posgen keyed_hash {key}".encode()).digest()[:8], "little"
    )
    for first in range(0, max(len(operands), 1), per_word):
        word = 0
        for value in operands[first : first + per_word]:
            word = word * m + value
        state = splitmix64(state ^ word)
    return state


def keyed_hash(operands: list[int], m: int, key: int) -> int:
    """The keyed hash as specified: the chained state's top 32 bits scaled to Z_m."""
    return ((keyed_state(operands, m, key) >> 32) * m) >> 32


@functools.lru_cache(maxsize=8)
def perm_order(state: int, m: int) -> tuple[int, ...]:
    """Z_m ordered by splitmix64(state ^ s), ties by s: the permutation of one keyed state
    (kept for the next targets: a far tuple stays put along a cot row, for two along a
    semirecursive one)."""
    return tuple(sorted(range(m), key=lambda s: (splitmix64(state ^ s), s)))


def far_perm(far_operands: list[int], near_operands: list[int], m: int, key: int) -> int:
    """The far tuple's keyed state orders Z_m by splitmix64(state ^ s); the near sum indexes."""
    return perm_order(keyed_state(far_operands, m, key), m)[sum(near_operands) % m]


def slot_perm(far_operands: list[int], near_operands: list[int], m: int, key: int) -> int:
    """Near operand i through far_perm of far operand i mod j (0 if none), summed mod m."""
    total = 0
    for i, value in enumerate(near_operands):
        f = far_operands[i % len(far_operands)] if far_operands else 0
        total += far_perm([f], [value], m, key)
    return total % m


def select_perm(far_operands: list[int], near_operands: list[int], m: int, key: int) -> int:
    """far_perm of the far operand at (last near operand) mod j (0 if none), near sum."""
    f = far_operands[near_operands[-1] % len(far_operands)] if far_operands else 0
    return far_perm([f], [sum(near_operands)], m, key)


def op_value(op: str, operands: list[int], m: int, key: int = 0, far: int = 0) -> int:
    """h(operands) from each op's definition (operands in position order, ``far`` of them far)."""
    total = sum(operands)
    if op == "mod_addition":
        return total % m
    if op == "pow_sin":
        return math.floor(math.pow(math.sin(total), 2) * m)
    if op == "pow_sin_2pi":
        return math.floor(abs(math.sin(2 * math.pi * (total % m) / m)) * m)
    if op == "square_sum":
        return total * total % m
    if op == "keyed_hash":
        return keyed_hash(operands, m, key)
    if op == "far_perm":
        return far_perm(operands[:far], operands[far:], m, key)
    if op == "slot_perm":
        return slot_perm(operands[:far], operands[far:], m, key)
    if op == "select_perm":
        return select_perm(operands[:far], operands[far:], m, key)
    raise ValueError(op)


def grow_row(task, window, length, m, near, far, op="mod_addition", key=0) -> list[int]:
    """x_t = h(far operands, near operands), one token at a time."""
    row = list(window)
    for t in range(len(window), length):
        operands = [row[p] for p in far_positions(task, t, near, far)] + row[t - near : t]
        row.append(op_value(op, operands, m, key, far))
    return row


def authors_splits(
    task: str, op: str, m: int, near: int, far: int, lengths: tuple[int, int], sizes: tuple
) -> dict[str, list[list[int]]]:
    """The authors' construction (src/data/components/*_sequence.py): rows grown from cycled
    sorted combinations; ``lengths`` are (train, test), ``sizes`` (train, validation, test)."""
    (train_length, test_length), (train_size, val_size, test_size) = lengths, sizes
    length, complete = max(train_length, test_length), []
    combinations = itertools.cycle(itertools.combinations(range(m), near + far))
    for seq in itertools.islice(combinations, max(train_size, val_size + test_size)):
        row = list(seq)
        if task == "cot":
            while len(row) < length:
                row.append(op_value(op, row[:far] + row[-near:], m))
        elif task == "recursive":
            while len(row) < length:
                row.append(op_value(op, row[-(far + near) : -near] + row[-near:], m))
        else:  # semirecursive: the far pointer moves every second token
            pointer = 0
            while len(row) < length:
                row.append(op_value(op, row[pointer : pointer + far] + row[-near:], m))
                if len(row) < length:
                    row.append(op_value(op, row[pointer : pointer + far] + row[-near:], m))
                    pointer += 1
        complete.append(row)
    return {
        "train": [row[:train_length] for row in complete[:train_size]],
        "validation": [row[:test_length] for row in complete[:val_size]],
        "test": [row[:test_length] for row in complete[val_size : val_size + test_size]],
    }


PROBE_STREAM = 0x70726F6265
"""The probe stream's spawn-key word (posgen.generator; docs/tasks.md, "Probe splits")."""


def _name_code(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")


def probe_stream_key(seed: int, task: str, split: str) -> int:
    """The replacement stream "keyed by seed, task, split" of docs/tasks.md, "Probe splits":
    numpy's SeedSequence over (seed; task code, split code, PROBE_STREAM)."""
    import numpy as np  # numpy's SeedSequence is part of the definition, not posgen

    key = (_name_code(task), _name_code(split), PROBE_STREAM)
    state = np.random.SeedSequence(seed, spawn_key=key).generate_state(1, np.uint64)
    return int(state[0])


def probe_positions(task, length, near, far, index) -> tuple[list[int], list[int]]:
    """(replaced, probed) of probe row ``index``, from the definition, with plain loops."""
    w = near + far
    replaced: set[int] = set()
    if far and length > w:
        if task == "cot":
            replaced = set(range(far))
        else:
            offset = index % (length - w)
            guarded: set[int] = set()
            order = list(range(w + offset, length)) + list(range(w + offset - 1, w - 1, -1))
            for t in order:
                first = far_positions(task, t, near, far)[0]
                if first in guarded or any(p in replaced for p in range(t - near, t + 1)):
                    continue
                replaced.add(first)
                guarded.update(range(t - near, t + 1))
    probed = [
        t
        for t in range(w, length)
        if t not in replaced
        and any(p in replaced for p in far_positions(task, t, near, far))
        and not any(p in replaced for p in range(t - near, t))
    ]
    return sorted(replaced), probed


def probe_row(task, source, index, m, near, far, seed, split, op="mod_addition", key=0) -> dict:
    """Probe row ``index`` of ``split`` made from the test row ``source``: the replaced
    positions get (x + 1 + u) mod m, u = splitmix64(splitmix64(index * L' + p) ^ key) mod
    (m - 1); far_rule is h of the stored operands at each probed position."""
    length = len(source)
    replaced, probed = probe_positions(task, length, near, far, index)
    stream = probe_stream_key(seed, task, split)
    row = list(source)
    for p in replaced:
        draw = splitmix64(splitmix64(index * length + p) ^ stream) % (m - 1)
        row[p] = (source[p] + 1 + draw) % m
    operands = [
        [row[p] for p in far_positions(task, t, near, far)] + row[t - near : t] for t in probed
    ]
    far_rule = [op_value(op, values, m, key, far) for values in operands]
    return {"tokens": row, "replaced": replaced, "probed": probed, "far_rule": far_rule}


# The audit figures of ``posgen validate`` (docs/storage.md check 6, the card's audit notes),
# one row and one position at a time.


def rule_lookback(task: str, t: int, near: int, far: int) -> int:
    """t - (earliest operand of x_t)."""
    return t - far_positions(task, t, near, far)[0] if far else near


def repeated(items: list) -> int:
    """How many items equal an earlier one."""
    return len(items) - len({tuple(item) for item in items})


def max_tv(rows: list[list[int]], m: int, window: int) -> float:
    """Largest, over positions t >= w, total-variation distance of the targets from uniform."""
    largest = 0.0
    for t in range(window, len(rows[0]) if rows else 0):
        counts = [0] * m
        for row in rows:
            counts[row[t]] += 1
        largest = max(largest, 0.5 * sum(abs(c / len(rows) - 1 / m) for c in counts))
    return largest


def copy_share(rows, context: int, window: int, boundary: int, region: str) -> float:
    """Share of the region's targets (ID: [w, L), OOD: [L, L')) equal to the token that followed
    the most recent earlier occurrence, in the row, of the ``context`` tokens before it."""
    hits = targets = 0
    for row in rows:
        for t in range(window, len(row)):
            if (t < boundary) != (region == "id"):
                continue
            targets += 1
            for s in range(t - 1, max(context, 1) - 1, -1):
                if row[s - context : s] == row[t - context : t]:
                    hits += row[s] == row[t]
                    break
    return hits / targets if targets else 0.0


def periodic_hits(row: list[int], train_length: int, window: int, longest: int = 512) -> int:
    """OOD targets that repeating the ID part's last period predicts: the smallest p whose
    last max(p, w) ID tokens each equal the token p before, x_t = x_{L - p + (t - L) mod p}."""
    big = train_length
    for p in range(1, min(longest, big // 2) + 1):
        span = max(p, window)
        if span + p > big:
            return 0
        if all(row[s] == row[s - p] for s in range(big - span, big)):
            return sum(row[big - p + (t - big) % p] == row[t] for t in range(big, len(row)))
    return 0


def is_periodic(row: list[int], train_length: int, window: int, longest: int = 512) -> bool:
    big = train_length
    for p in range(1, min(longest, big // 2) + 1):
        span = max(p, window)
        if span + p > big:
            return False
        if all(row[s] == row[s - p] for s in range(big - span, big)):
            return True
    return False


def question_lookback(task, row, m, near, far, op="mod_addition", key=0) -> list[int]:
    """D*(t) for t = w ..: the smallest D >= k at which every question q in Z_m^j reproducing
    the visible targets (in x_{t-D} .. x_{t-1}, reading x_t's far operands) gives one x_t."""
    w = near + far
    found = []
    for t in range(w, len(row)):
        start = far_positions(task, t, near, far)[0] if far else t - near
        lookback = t - start
        for d in range(near, t - start):
            visible = [
                s
                for s in range(max(w, t - d + near), t)
                if (far_positions(task, s, near, far)[0] if far else s - near) == start
            ]
            answers = set()
            for q in itertools.product(range(m), repeat=far):
                if all(
                    op_value(op, [*q, *row[s - near : s]], m, key, far) == row[s] for s in visible
                ):
                    answers.add(op_value(op, [*q, *row[t - near : t]], m, key, far))
            if len(answers) == 1:
                lookback = d
                break
        found.append(lookback)
    return found
