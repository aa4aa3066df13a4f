"""Rows: the golden rows, and the kernel's rows whatever the block or slab size (every op's
random-spec oracle property: test_ops)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import posgen.generator
from posgen.generator import generate_rows, generate_split, grow, transpose_tiles
from posgen.spec import TaskSpec
from posgen.tasks import TASKS, dependency_matrix

GOLDEN = {
    "recursive": [
        "0 1 2 3 6 12 6 10 0 11 10 14 1 2 10 10 6 11 3 13 16 9 7 11",
        "0 1 2 4 7 14 10 1 15 6 15 3 5 12 1 4 5 5 15 12 3 1 14 13",
        "0 1 2 5 8 16 14 9 13 1 3 9 9 5 9 15 4 16 10 11 7 10 4 15",
    ],
    "cot": [
        "0 1 2 3 6 11 3 3 0 6 9 15 13 3 14 13 13 6 15 0 4 2 6 12",
        "0 1 2 4 7 13 7 10 13 13 2 11 9 5 8 5 1 14 3 1 1 5 7 13",
        "0 1 2 5 8 15 11 0 9 3 12 7 5 7 2 14 6 5 8 2 15 8 8 14",
    ],
    "semirecursive": [
        "0 1 2 3 6 11 4 5 5 16 12 2 2 5 3 4 16 10 1 15 14 1 12 9",
        "0 1 2 4 7 13 8 12 1 6 6 0 2 15 13 9 11 7 5 1 14 4 8 15",
        "0 1 2 5 8 15 12 2 14 13 0 15 2 8 6 14 6 4 9 4 14 7 4 4",
    ],
}


@pytest.mark.parametrize("task", TASKS)
def test_paper_seeding_reproduces_the_golden_rows_of_posgen_md(task):
    spec = TaskSpec(task=task, seeding="paper", train_length=24, train_size=3)
    assert generate_split(spec, "train").tolist() == [
        list(map(int, r.split())) for r in GOLDEN[task]
    ]


@given(st.sampled_from(TASKS), st.integers(1, 5), st.integers(0, 5), st.integers(1, 50))
def test_dependency_rule_names_exactly_j_plus_k_earlier_positions(oracle, task, near, far, extra):
    length = near + far + extra
    matrix = dependency_matrix(task, length, near, far)
    for offset, positions in enumerate(matrix.tolist()):
        t = near + far + offset
        assert positions == oracle.far_positions(task, t, near, far) + list(range(t - near, t))
        assert len(set(positions)) == near + far
        assert 0 <= min(positions) <= max(positions) < t


# 25 examples: the store's block-size test and the slab-size tests cover this path too
@settings(max_examples=25)
@given(st.sampled_from(TASKS), st.integers(1, 40), st.integers(1, 40), st.integers(0, 200))
def test_rows_do_not_depend_on_block_size(task, block_a, block_b, seed):
    spec = TaskSpec(task=task, train_size=57, train_length=20, seed=seed)
    a = generate_rows(spec, "train", 3, 57, block_rows=block_a)
    b = generate_rows(spec, "train", 3, 57, block_rows=block_b)
    assert np.array_equal(a, b)
    assert np.array_equal(a[10:], generate_rows(spec, "train", 13, 57, block_rows=block_b))


@pytest.mark.parametrize(("start", "stop"), [(0, 58), (-1, 5)])
def test_rows_outside_the_split_are_refused(start, stop):
    with pytest.raises(ValueError, match=rf"rows \[{start}, {stop}\) out of range for train"):
        generate_rows(TaskSpec(task="cot", train_size=57), "train", start, stop)


@pytest.mark.parametrize(
    ("windows", "message", "given"),
    [
        (np.array([[0, 1, 2, 17]]), r"\[0, 17\)", {}),
        (np.array([[0.5, 1, 2, 3]]), "integer tokens, got dtype float64", {}),  # was cut to 0
        (np.array([[True, False, True, True]]), "integer tokens, got dtype bool", {}),
        (
            np.array([0, 1, 2, 3]),
            r"\(rows, w\) integer tokens, got dtype int64 of shape \(4,\)",
            {},
        ),
        (np.array([[0, 1, 2]]), "windows have 3 columns, the spec's window is 4", {}),
        (np.array([[0, 1, 2, 3]]), "length 3 is shorter than the seed window 4", {"length": 3}),
        (np.array([[0, 1, 2, 3]]), r"out must be \(1, 8\)", {"out": np.empty((1, 9), np.uint8)}),
    ],
)
def test_windows_that_are_not_rows_of_tokens_are_refused(windows, message, given):
    with pytest.raises(ValueError, match=message):
        grow(TaskSpec(task="cot"), windows, given.get("length", 8), out=given.get("out"))


def test_windows_as_lists_grow_as_arrays_do():
    spec = TaskSpec(task="cot")
    assert np.array_equal(grow(spec, [[0, 1, 2, 3]], 8), grow(spec, np.array([[0, 1, 2, 3]]), 8))


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("modulus", [17, 200, 1000])
@pytest.mark.parametrize("slab_bytes", [1, 4096, 1 << 20])
def test_kernel_is_exact_for_big_blocks_whatever_the_slab_size(
    oracle, monkeypatch, task, modulus, slab_bytes
):
    monkeypatch.setattr(posgen.generator, "SLAB_BYTES", slab_bytes)
    spec = TaskSpec(task=task, modulus=modulus, train_length=300, test_length=300)
    windows = np.random.default_rng(modulus).integers(0, modulus, size=(251, 4))
    assert grow(spec, windows, 300).tolist() == big_block_oracle(oracle, task, modulus)


@functools.cache  # the oracle's 251 rows of length 300, once per task and modulus
def big_block_oracle(oracle, task: str, modulus: int) -> list[list[int]]:
    windows = np.random.default_rng(modulus).integers(0, modulus, size=(251, 4))
    return [oracle.grow_row(task, w.tolist(), 300, modulus, 3, 1) for w in windows]


def test_kernel_writes_into_a_slice_of_a_larger_array():
    spec = TaskSpec(task="cot", seeding="paper", train_size=50)
    rows = generate_rows(spec, "train", 0, 50, block_rows=16)
    out = np.zeros((60, 64), dtype=np.uint8)
    grow(spec, rows[:, :4].astype(np.int64), 64, out=out[5:55])
    assert np.array_equal(out[5:55], rows)
    assert not out[:5].any() and not out[55:].any()


def test_tile_transpose_turns_8x8_byte_blocks_around():
    block = np.arange(64, dtype=np.uint8).reshape(8, 8)
    words = block.view(np.uint64).reshape(1, 8, 1)
    out = np.empty_like(words)
    transpose_tiles(words, 8, 1, out)
    assert np.array_equal(out.view(np.uint8).reshape(8, 8), block.T)
    assert np.array_equal(words.view(np.uint8).reshape(8, 8), block)  # input untouched
