"""The fast kernel gives exactly the rows of the plain-loop oracle (tests/oracle.py)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import posgen.generator
from posgen.generator import additive_steps, generate_rows, grow, storage_dtype, transpose_tiles
from posgen.spec import TaskSpec
from posgen.tasks import TASKS
from tests.oracle import grow_row

kernel_cases = st.fixed_dictionaries(
    {
        "task": st.sampled_from(TASKS),
        "modulus": st.one_of(
            st.integers(2, 128), st.integers(129, 256), st.integers(257, 40000), st.just(65536)
        ),
        "near": st.integers(1, 9),
        "far": st.integers(0, 9),
        "extra": st.integers(0, 70),
        "rows": st.integers(1, 40),
        "seed": st.integers(0, 2**32 - 1),
    }
)


@given(kernel_cases)
def test_kernel_equals_the_plain_loop_oracle_on_random_specs(case):
    near, far, m = case["near"], case["far"], case["modulus"]
    length = near + far + case["extra"]
    assume(m ** (near + far) >= 3)
    sizes = {"train_size": 1, "val_size": 1, "test_size": 1}
    spec = TaskSpec(
        task=case["task"], modulus=m, near=near, far=far, train_length=length + 1, **sizes
    )
    windows = np.random.default_rng(case["seed"]).integers(0, m, size=(case["rows"], near + far))
    fast = grow(spec, windows, length)
    slow = [grow_row(spec.task, w.tolist(), length, m, near, far) for w in windows]
    assert fast.dtype == storage_dtype(m)
    assert fast.tolist() == slow


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("modulus", [17, 200, 1000])
@pytest.mark.parametrize("slab_bytes", [1, 4096, 1 << 20])
def test_kernel_is_exact_for_big_blocks_whatever_the_slab_size(
    monkeypatch, task, modulus, slab_bytes
):
    monkeypatch.setattr(posgen.generator, "SLAB_BYTES", slab_bytes)
    spec = TaskSpec(task=task, modulus=modulus, train_length=300, test_length=300)
    windows = np.random.default_rng(modulus).integers(0, modulus, size=(1003, 4))
    assert grow(spec, windows, 300).tolist() == big_block_oracle(task, modulus)


@functools.cache
def big_block_oracle(task: str, modulus: int) -> list[list[int]]:
    """The oracle's 1003 rows of length 300 (computed once per task and modulus)."""
    windows = np.random.default_rng(modulus).integers(0, modulus, size=(1003, 4))
    return [grow_row(task, w.tolist(), 300, modulus, 3, 1) for w in windows]


def test_kernel_writes_into_a_slice_of_a_larger_array():
    spec = TaskSpec(task="cot", seeding="paper", train_size=50)
    rows = generate_rows(spec, "train", 0, 50, block_rows=16)
    out = np.zeros((60, 64), dtype=np.uint8)
    windows = rows[:, :4].astype(np.int64)
    grow(spec, windows, 64, out=out[5:55])
    assert np.array_equal(out[5:55], rows)
    assert not out[:5].any()
    assert not out[55:].any()


def test_tile_transpose_turns_8x8_byte_blocks_around():
    block = np.arange(64, dtype=np.uint8).reshape(8, 8)
    words = block.view(np.uint64).reshape(1, 8, 1)
    out = np.empty_like(words)
    transpose_tiles(words, 8, 1, out)
    assert np.array_equal(out.view(np.uint8).reshape(8, 8), block.T)
    assert np.array_equal(words.view(np.uint8).reshape(8, 8), block)  # input untouched


def test_additive_steps_recursive_is_two_x_t_minus_x_t_minus_w():
    # x_{t+1} = x_t + x_t - x_{t-w}: x_t enters again, x_{t-w} leaves.
    assert additive_steps("recursive", 3, 1, 8) == (((0,), (4,)), ((1,), (5,)), ((2,), (6,)))
