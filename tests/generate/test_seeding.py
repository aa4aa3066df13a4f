"""Paper seeding reproduces the authors' construction; disjoint seeding never overlaps."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from pydantic import ValidationError

from posgen.generator import feistel_permute, generate_split, seed_windows, unrank_combinations
from posgen.spec import TaskSpec
from posgen.tasks import TASKS


@given(
    task=st.sampled_from(TASKS),
    op=st.sampled_from(["mod_addition", "pow_sin", "pow_sin_2pi"]),  # the authors' ops
    m=st.integers(4, 17),
    near=st.integers(1, 3),
    far=st.integers(0, 2),
    lengths=st.tuples(st.integers(1, 12), st.integers(0, 12)),
    sizes=st.tuples(st.integers(1, 120), st.integers(1, 60), st.integers(1, 60)),
)
def test_paper_seeding_matches_the_authors_construction_row_for_row(
    oracle, task, op, m, near, far, lengths, sizes
):
    train_length = near + far + lengths[0]
    test_length = train_length + lengths[1]
    try:
        spec = TaskSpec(
            task=task, op=op, modulus=m, near=near, far=far, seeding="paper",
            train_length=train_length, test_length=test_length,
            train_size=sizes[0], val_size=sizes[1], test_size=sizes[2],
        )  # fmt: skip
    except ValidationError:  # pow_sin_2pi giving m, or fewer windows than rows need
        assume(False)
    expected = oracle.authors_splits(task, op, m, near, far, (train_length, test_length), sizes)
    for split, rows in expected.items():
        assert generate_split(spec, split).tolist() == rows, split


def test_paper_seeding_overlaps_exactly_as_the_authors_code_does():
    spec = TaskSpec(task="recursive", seeding="paper")
    train, validation, test = (generate_split(spec, s) for s in ("train", "validation", "test"))
    # every validation row begins with exactly the train row of the same index
    assert np.array_equal(validation[:, :64], train[:1000])
    # test rows are complete-list rows 1000..1999: they begin with train rows 1000..1999
    assert np.array_equal(test[:, :64], train[1000:2000])
    # 2380 sorted windows, cycled: train row r repeats row r - 2380
    assert math.comb(17, 4) == 2380
    assert np.array_equal(train[2380:4760], train[:2380])
    assert len(np.unique(train[:, :4], axis=0)) == 2380


def test_unranking_matches_itertools_order_including_huge_spaces():
    for m, w in [(17, 4), (9, 9), (12, 1), (20, 7)]:
        expected = list(itertools.combinations(range(m), w))
        got = unrank_combinations(np.arange(len(expected)), m, w)
        assert [tuple(r) for r in got.tolist()] == expected
    # a space beyond int64: the first windows still follow itertools
    first = list(itertools.islice(itertools.combinations(range(70000), 9), 5))
    got = unrank_combinations(np.arange(5, dtype=object), 70000, 9)
    assert [tuple(r) for r in got.tolist()] == first


DISJOINT = dict(task="cot", modulus=5, near=2, far=1, train_length=6, test_length=[8, 10])


def disjoint_spec(**fields):
    return TaskSpec(**{**DISJOINT, "train_size": 1000, "val_size": 100, "test_size": 100, **fields})


@given(st.integers(0, 2**63 - 1), st.sampled_from(TASKS))
def test_disjoint_windows_never_repeat_nor_cross_splits(seed, task):
    # 5**3 = 125 windows, all of them used: 60 + 20 + 15 + 15 + 15
    spec = disjoint_spec(
        task=task, seed=seed, train_size=60, val_size=20, test_size=15, test_length=[8, 9, 10]
    )
    seen = set()
    for split in spec.split_names:
        windows = seed_windows(spec, split, 0, spec.split_size(split))
        keys = {tuple(w) for w in windows.tolist()}
        assert len(keys) == len(windows), f"repeat inside {split}"
        assert not keys & seen, f"{split} shares a window with an earlier split"
        seen |= keys
    assert len(seen) == 125


def test_disjoint_test_split_does_not_move_when_train_size_changes():
    def test(**fields):
        return generate_split(disjoint_spec(modulus=17, **fields), "test")

    assert np.array_equal(test(train_size=100), test(train_size=900))
    assert not np.array_equal(test(seed=1), test(seed=2))


def test_neighbouring_seeds_do_not_share_rows():
    a = seed_windows(disjoint_spec(modulus=101, seed=7), "train", 0, 1000)
    b = seed_windows(disjoint_spec(modulus=101, seed=8), "train", 0, 1000)
    assert not np.array_equal(a[1:], b[:-1])
    assert len({tuple(r) for r in a.tolist()} & {tuple(r) for r in b.tolist()}) < 50


@pytest.mark.parametrize(
    "spec",
    [
        TaskSpec(task="recursive"),
        TaskSpec(task="recursive", modulus=65536, near=4, far=2, train_size=20_000),
    ],
    ids=["17^4 windows", "65536^6 windows, beyond 2^63"],
)
def test_disjoint_windows_are_distinct_tokens_of_the_whole_space_not_only_sorted_ones(spec):
    windows = seed_windows(spec, "train", 0, spec.train_size)
    assert 0 <= windows.min() <= windows.max() < spec.modulus
    assert len(np.unique(windows, axis=0)) == spec.train_size
    assert (np.diff(windows, axis=1) <= 0).any(axis=1).mean() > 0.5


def test_feistel_permutation_is_a_bijection_of_its_domain():
    keys = np.random.SeedSequence(3).generate_state(8, dtype=np.uint64)
    for domain in (1, 2, 3, 17, 1000, 83521):
        image = feistel_permute(np.arange(domain, dtype=np.uint64), domain, keys)
        assert sorted(image.tolist()) == list(range(domain))


def test_a_wide_window_finds_its_permuted_digits_without_powers_of_thousands_of_digits():
    """w = 8192 at m = 65536 tried m^8192, m^8191, ... down to m^3: 3 s per block of rows."""
    exponents = []

    class Modulus(int):
        def __pow__(self, exponent):
            exponents.append(exponent)
            return int(self) ** exponent

    spec = TaskSpec(task="cot", modulus=65536, near=4096, far=4096, train_length=8193,
                    test_length=8193, train_size=2, val_size=1, test_size=1)  # fmt: skip
    fields = {"modulus": Modulus(spec.modulus), "window": spec.window}
    proxy = type("Spec", (), {"__getattr__": lambda _, name: getattr(spec, name), **fields})()
    windows = seed_windows(proxy, "train", 0, 2)
    assert windows.tolist() == seed_windows(spec, "train", 0, 2).tolist()
    assert max(exponents) <= 64
