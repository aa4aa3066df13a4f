"""Copy rules and linear shortcut rules, measured on the stored rows (linear in the tokens).

* **Copy rule** (an induction head): predict x_t by the token that followed the most recent
  earlier occurrence, in the same row, of the K tokens before t (K = k and K = w). Example
  (K = 2): row ``3 5 9 3 5 ?`` predicts 9, the token after the earlier ``3 5``; below,
  x_5 = 9 is predicted (a hit) and x_6 = 1 is not (``5 9`` was followed by 3).
* **Linear rule**: the shortest rule of the additive skeleton of the spec (same task, m, k, j,
  h = mod_addition; :func:`posgen.validate.shortcuts.local_rules`) at positions where it is
  shorter than the task's rule, applied to the stored tokens. For mod_addition it always holds
  there; for another h it says how often that shortcut still works.

Each figure is counted over in-distribution targets (t in [w, L)) and out-of-distribution
ones (t in [L, L')) separately, with the number of targets where an earlier occurrence was
found (the chance level of a copy is about found / m).

>>> import numpy as np
>>> copy_hits(np.array([[3, 5, 9, 3, 5, 9, 1]]), context=2, first=2, boundary=5)
{'id': (0, 0), 'ood': (1, 2)}
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from posgen.ops import mix64
from posgen.spec import TaskSpec
from posgen.validate.shortcuts import is_prime, local_rules

AUDIT_TOKENS = 1 << 18
"""Tokens of a split (its first rows) that the copy and linear rules are measured on: rows
are independent, so this bounds the audit's cost; every share says how many targets it
counts."""
COPY_TOKENS = 1 << 20
"""Tokens whose contexts are sorted at once (about 10 arrays of 8 bytes each)."""
_HASH_BASE = np.uint64(0x9E3779B97F4A7C15)
"""Odd multiplier of the polynomial context hash (invertible mod 2^64)."""
_HASH_INVERSE = np.uint64(pow(int(_HASH_BASE), -1, 2**64))
EXACT_CONTEXT = 16
"""Contexts up to this long get exact base-m codes."""


def context_codes(tokens: np.ndarray, context: int, modulus: int) -> np.ndarray:
    """``codes[:, t]`` identifies x_{t-K} .. x_{t-1} (t >= K; columns below K are 0).

    Exact base-m codes when K <= :data:`EXACT_CONTEXT` and m^K <= 2^64 (K vectorized
    steps); else a 64-bit polynomial hash from prefix sums (O(tokens) whatever K; distinct
    contexts collide with probability about 2^-64 a pair).

    >>> context_codes(np.array([[1, 2, 3]]), 2, 10).tolist()
    [[0, 0, 12]]
    """
    rows, length = tokens.shape
    codes = np.zeros((rows, length), dtype=np.uint64)
    if length <= context:
        return codes
    count = length - context
    tokens = tokens.astype(np.uint64)
    with np.errstate(over="ignore"):
        if context <= EXACT_CONTEXT and modulus**context <= 2**64:
            base = np.uint64(modulus)
            code = np.zeros((rows, count), dtype=np.uint64)
            for i in range(context):
                code *= base
                code += tokens[:, i : i + count]
            codes[:, context:] = code
            return codes
        powers = np.cumprod(np.full(length, _HASH_BASE, dtype=np.uint64)) * _HASH_INVERSE
        inverse = np.cumprod(np.full(length, _HASH_INVERSE, dtype=np.uint64)) * _HASH_BASE
        prefix = np.zeros((rows, length + 1), dtype=np.uint64)
        np.cumsum(tokens * powers, axis=1, out=prefix[:, 1:])
        codes[:, context:] = (prefix[:, context:length] - prefix[:, :count]) * inverse[:count]
    return codes


def copy_hits(
    tokens: np.ndarray, context: int, first: int, boundary: int, modulus: int = 1 << 16
) -> dict[str, tuple[int, int]]:
    """Per region (``id``: t in [first, boundary), ``ood``: t >= boundary): (hits, found).

    ``found`` counts targets whose K-token context occurred earlier in the row; ``hits``
    those where the token after the most recent earlier occurrence equals x_t.
    """
    rows, length = tokens.shape
    out = {"id": (0, 0), "ood": (0, 0)}
    start = max(context, 1)
    if rows == 0 or length <= max(first, start):
        return out
    step = max(1, COPY_TOKENS // length)
    if rows > step:  # rows are independent: bounded memory in row chunks
        for lo in range(0, rows, step):
            part = copy_hits(tokens[lo : lo + step], context, first, boundary, modulus)
            for name in out:
                out[name] = (out[name][0] + part[name][0], out[name][1] + part[name][1])
        return out
    codes = context_codes(tokens, context, modulus)[:, start:].reshape(-1)
    row_of = np.repeat(np.arange(rows, dtype=np.uint64), length - start)
    exact = context <= EXACT_CONTEXT and modulus**context <= 2**64
    code_bits = (modulus**context - 1).bit_length() if exact else 64
    if code_bits + max(1, (rows - 1).bit_length()) <= 64:  # (row, code) packed exactly
        key = (row_of << np.uint64(code_bits)) | codes
    else:  # mixed with the row: equal only for equal rows, up to 64-bit collisions
        key = codes ^ mix64(row_of + np.uint64(1))
    order = np.argsort(key, kind="stable")  # stable: equal keys stay in t order
    ordered = key[order]
    same = ordered[1:] == ordered[:-1]
    later, earlier = order[1:][same], order[:-1][same]
    t = later % (length - start) + start
    source = earlier % (length - start) + start
    row = later // (length - start)
    hit = tokens[row, source] == tokens[row, t]
    for name, lo, hi in (("id", first, boundary), ("ood", max(first, boundary), length)):
        inside = (t >= lo) & (t < hi)
        out[name] = (int(np.count_nonzero(hit & inside)), int(np.count_nonzero(inside)))
    return out


def linear_rule_hits(
    spec: TaskSpec, tokens: np.ndarray, boundary: int
) -> dict[str, tuple[int, int]] | None:
    """Per region: (targets the skeleton's shorter linear rules predict, targets they cover).

    None when the skeleton's rules are not computed (composite m, or too large).
    """
    rows, length = tokens.shape
    if not is_prime(spec.modulus):
        return None
    skeleton = TaskSpec(**{**spec.canonical(), "op": "mod_addition", "op_key": 0})
    rules = local_rules(skeleton, length)
    if rules is None or not rules.coefficients:
        return None
    m = spec.modulus
    wide = tokens.T.astype(np.int64)  # position-major: each column read is contiguous
    counts = {"id": [0, 0], "ood": [0, 0]}
    for i in np.flatnonzero(rules.effective < rules.rule).tolist():
        t = rules.first + i
        predicted = np.zeros(rows, dtype=np.int64)
        for d, a in enumerate(rules.coefficients[i], start=1):
            if a:
                predicted += a * wide[t - d]
        region = counts["id" if t < boundary else "ood"]
        region[0] += int(np.count_nonzero(predicted % m == wide[t]))
        region[1] += rows
    return {name: (hits, total) for name, (hits, total) in counts.items()}


@dataclass
class ShortcutTally:
    """Copy and linear-rule counts of one split, streamed batch by batch."""

    spec: TaskSpec
    contexts: tuple[int, ...]
    copies: dict[tuple[int, str], list[int]] = field(default_factory=dict)
    linear: dict[str, list[int]] | None = None
    linear_known: bool = True
    rows: int = 0
    tokens: int = 0

    @classmethod
    def for_spec(cls, spec: TaskSpec) -> ShortcutTally:
        """Contexts K = k and K = w (once when j = 0)."""
        contexts = tuple(sorted({spec.near, spec.window}))
        return cls(spec, contexts)

    def add(self, tokens: np.ndarray) -> None:
        """Count one batch of rows (``(rows, length)``): the first :data:`AUDIT_TOKENS` only."""
        spec = self.spec
        room = max(0, AUDIT_TOKENS - self.tokens) // max(1, tokens.shape[1])
        if room == 0:
            return
        tokens = tokens[:room]
        self.rows += tokens.shape[0]
        self.tokens += tokens.size
        boundary = min(spec.train_length, tokens.shape[1])
        for context in self.contexts:
            found = copy_hits(tokens, context, spec.window, boundary, spec.modulus)
            for region, (hits, seen) in found.items():
                tally = self.copies.setdefault((context, region), [0, 0])
                tally[0] += hits
                tally[1] += seen
        if not self.linear_known:
            return
        linear = linear_rule_hits(spec, tokens, boundary)
        if linear is None:
            self.linear_known = False
            self.linear = None
            return
        if self.linear is None:
            self.linear = {"id": [0, 0], "ood": [0, 0]}
        for region, (hits, covered) in linear.items():
            self.linear[region][0] += hits
            self.linear[region][1] += covered
