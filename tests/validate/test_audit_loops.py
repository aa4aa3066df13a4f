"""Every figure of the ``posgen validate`` table, and the counts its checks report, against
plain loops over rows and positions straight from the definitions (docs/storage.md check 6,
the card's audit notes, tests/oracle.py)."""

from __future__ import annotations

import math
import random

import datasets
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import posgen.validate.audits as audits
from posgen.generator import generate_split
from posgen.spec import TaskSpec
from posgen.store.formats import row_schema, rows_to_table, to_dataset_dict
from posgen.store.manifest import read_manifest
from posgen.tasks import TASKS
from posgen.validate import validate
from posgen.validate.shortcuts import is_prime, local_rules

OPS = ["mod_addition", "mod_addition", "square_sum", "keyed_hash", "pow_sin", "far_perm"]


@st.composite
def small_specs(draw) -> TaskSpec:
    near, far = draw(st.integers(1, 3)), draw(st.integers(0, 2))
    train_length = draw(st.integers(near + far + 1, 24))
    op = draw(st.sampled_from(OPS))
    assume(op != "far_perm" or far)
    fields = dict(
        task=draw(st.sampled_from(TASKS)), op=op, near=near, far=far,
        modulus=draw(st.sampled_from([2, 3, 5, 7, 11, 16, 101, 300])),
        train_length=train_length, test_length=[train_length + draw(st.integers(0, 30))],
        train_size=draw(st.integers(1, 12)), val_size=draw(st.integers(1, 5)),
        test_size=draw(st.integers(1, 6)), seeding=draw(st.sampled_from(["disjoint", "paper"])),
        seed=draw(st.integers(0, 99)),
    )  # fmt: skip
    try:
        return TaskSpec(**fields)
    except (ValidationError, ValueError):  # e.g. pow_sin_2pi at an m where a sum gives m
        assume(False)
        raise


def sensitivity_by_loops(oracle, spec: TaskSpec, rows: list[list[int]]) -> tuple[float, int]:
    """Share of single-operand changes that change h, over the sample operand_sensitivity
    reads: the first targets in row order, operand slots and shifts evenly spaced."""
    w, m, length = spec.window, spec.modulus, len(rows[0])
    samples = max(1, min(audits.SENSITIVITY_SAMPLES, audits.SENSITIVITY_CELLS // w))
    cells = [(row, t) for row in rows for t in range(w, length)][:samples]
    slots = sorted(set(np.linspace(0, w - 1, min(w, audits.SENSITIVITY_SLOTS)).astype(int)))
    shifts = sorted(set(np.linspace(1, m - 1, min(m - 1, audits.SENSITIVITY_SHIFTS)).astype(int)))
    changed = tried = 0
    for row, t in cells:
        far = [row[p] for p in oracle.far_positions(spec.task, t, spec.near, spec.far)]
        operands = far + row[t - spec.near : t]
        base = oracle.op_value(spec.op, operands, m, spec.op_key, spec.far)
        for slot in slots:
            for shift in shifts:
                moved = list(operands)
                moved[slot] = (moved[slot] + int(shift)) % m
                changed += oracle.op_value(spec.op, moved, m, spec.op_key, spec.far) != base
                tried += 1
    return changed / tried, tried


def linear_share_by_loops(rules, m: int, rows, lo: int, hi: int) -> float:
    """Share of the targets in [lo, hi) that the additive skeleton's rules (``rules``, GF(m)
    coefficients) predict at the positions where they are shorter than the task's."""
    hits = 0
    for t in range(lo, hi):
        i = t - rules.first
        if rules.effective[i] < rules.rule[i]:
            for row in rows:
                predicted = sum(a * row[t - d] for d, a in enumerate(rules.coefficients[i], 1))
                hits += predicted % m == row[t]
    return hits / (len(rows) * (hi - lo)) if hi > lo else 0.0


def figures_by_loops(oracle, spec: TaskSpec, split: str, splits: dict, cheap=False) -> dict:
    """The facts behind the validate table's columns, one row and one position at a time
    (``cheap``: not operand sensitivity and question look-backs)."""
    rows, (w, m, near, far) = splits[split], (spec.window, spec.modulus, spec.near, spec.far)
    length, big = len(rows[0]), spec.train_length
    boundary = min(big, length)
    lookbacks = [oracle.rule_lookback(spec.task, t, near, far) for t in range(w, length)]
    windows = {name: {tuple(row[:w]) for row in other} for name, other in splits.items()}
    ood = len(rows) * max(0, length - big)
    periodic = [oracle.periodic_hits(row, big, w) for row in rows] if ood else []
    found = {
        "dependency_count": w,
        "max_lookback": max(lookbacks),
        "repeated_rows": oracle.repeated(rows),
        "repeated_windows": oracle.repeated([row[:w] for row in rows]),
        "shared_windows": {
            name: sum(tuple(row[:w]) in theirs for row in rows)
            for name, theirs in windows.items()
            if name != split
        },
        "target_balance_max_tv": oracle.max_tv(rows, m, w),
        "periodic_shortcut_share": sum(periodic) / ood if ood else 0.0,
        "periodic_rows": sum(oracle.is_periodic(row, big, w) for row in rows) if ood else 0,
    }
    for name, context in (("k", near), ("w", w)):
        for region in ("id", "ood"):
            share = oracle.copy_share(rows, context, w, boundary, region)
            found[f"copy_{name}_share_{region}"] = share
    if not cheap:
        found["operand_sensitivity"], found["operand_probes"] = sensitivity_by_loops(
            oracle, spec, rows
        )
    rules = local_rules(spec, length)  # D itself: brute force in test_audits.py
    if rules is not None:
        shorter = [d < rule for d, rule in zip(rules.effective.tolist(), lookbacks, strict=True)]
        found["shorter_lookback_id"] = sum(shorter[: boundary - w])
        found["shorter_lookback_ood"] = sum(shorter[boundary - w :])
        found["effective_lookback_max"] = max(rules.effective.tolist())
    skeleton = TaskSpec(**{**spec.canonical(), "op": "mod_addition", "op_key": 0})
    linear = local_rules(skeleton, length) if is_prime(m) else None  # n/a at composite m
    for region, lo, hi in (("id", w, boundary), ("ood", boundary, length)):
        share = (
            linear_share_by_loops(linear, m, rows, lo, hi)
            if linear and linear.coefficients
            else None
        )
        found[f"linear_rule_share_{region}"] = share
    if far and m**far <= 64 and not cheap:  # every row audited (none sampled out at these sizes)
        d_star = [oracle.question_lookback(spec.task, row, m, near, far, spec.op, spec.op_key)
                  for row in rows]  # fmt: skip
        for region, lo, hi in (("id", w, boundary), ("ood", boundary, length)):
            values = [d[t - w] for d in d_star for t in range(lo, hi)]
            if values:
                share = sum(v <= near + 2 for v in values) / len(values)
                found[f"question_short_share_{region}"] = share
    return found


def same(got, want) -> bool:
    if isinstance(want, float) and got is not None:
        return math.isclose(got, want, rel_tol=1e-12, abs_tol=1e-12)
    return got == want


@settings(max_examples=25, deadline=None)
@given(small_specs())
def test_every_figure_of_the_validate_table_equals_its_plain_loop(oracle, spec):
    report = validate(to_dataset_dict(spec), spec)
    assert report.ok, report.summary()
    splits = {split: generate_split(spec, split).tolist() for split in spec.split_names}
    for split in splits:
        facts = report.facts[spec.task][split]
        for name, want in figures_by_loops(oracle, spec, split, splits).items():
            assert same(facts[name], want), (split, name, facts[name], want)


@pytest.mark.parametrize("seeding", ["disjoint", "paper"])
def test_figures_streamed_from_files_and_row_groups_equal_plain_loops(
    oracle, small_dataset, small_paper_dataset, seeding
):
    """Several files per split and row groups per file: every tally fed batch by batch."""
    folder = small_dataset if seeding == "disjoint" else small_paper_dataset
    report = validate(folder)
    assert report.ok, report.summary()
    for config, entry in read_manifest(folder).configs.items():
        spec = entry.spec
        splits = {split: generate_split(spec, split).tolist() for split in spec.split_names}
        for split in splits:
            facts = report.facts[config][split]
            for name, want in figures_by_loops(oracle, spec, split, splits, cheap=True).items():
                assert same(facts[name], want), (config, split, name, facts[name], want)


@pytest.mark.parametrize("seed", range(6))
def test_the_window_check_counts_the_positions_and_rows_a_loop_finds_wrong(oracle, seed):
    rng = random.Random(seed)
    spec = TaskSpec(task=TASKS[seed % 3], op=OPS[seed % len(OPS)], modulus=rng.choice([5, 17]),
                    near=rng.randint(1, 3), far=1 + seed % 2, train_length=12,
                    test_length=[20], train_size=1, val_size=1, test_size=8)  # fmt: skip
    clean = generate_split(spec, "test")
    rows = clean.copy()
    for _ in range(rng.randint(1, 12)):  # seed windows and targets, some twice
        rows[rng.randrange(8), rng.randrange(20)] = rng.randrange(spec.modulus)
    wrong = [
        [
            row[t] != (
                clean[r][t]
                if t < spec.window
                else oracle.op_value(spec.op, [row[p] for p in oracle.far_positions(
                    spec.task, t, spec.near, spec.far)] + row[t - spec.near : t],
                    spec.modulus, spec.op_key, spec.far)
            )
            for t in range(20)
        ]
        for r, row in enumerate(rows.tolist())
    ]  # fmt: skip
    table = rows_to_table(0, rows, row_schema(spec.modulus))
    data = datasets.DatasetDict({"test": datasets.Dataset(table, fingerprint=f"w{seed}")})
    check = next(c for c in validate(data, spec).checks if c.check == "window")
    positions, bad_rows = sum(map(sum, wrong)), sum(map(any, wrong))
    assert check.ok == (positions == 0)
    if positions:
        assert check.failures == positions
        assert f"({positions} position(s) failed in all, in {bad_rows} row(s))" in check.message


@pytest.mark.parametrize("seed", range(8))
def test_sampled_question_lookbacks_equal_plain_loops_over_the_picked_rows(
    oracle, monkeypatch, seed
):
    rng = random.Random(seed)
    spec = TaskSpec(task=TASKS[seed % 3], op=OPS[seed % len(OPS)], modulus=rng.choice([5, 7]),
                    near=rng.randint(1, 3), far=1, train_length=rng.randint(6, 12),
                    test_length=[14], train_size=30, val_size=1, test_size=25,
                    seeding="paper")  # fmt: skip
    split = ("train", "test")[seed % 2]
    rows = generate_split(spec, split)
    wanted = rng.randint(1, 9)
    monkeypatch.setattr(audits, "sample_rows", lambda spec, length: wanted)
    tally = audits.LookbackTally(spec, rows.shape[1], rows.shape[0])
    cuts = sorted(rng.sample(range(1, rows.shape[0]), 3))  # batches
    for lo, hi in zip([0, *cuts], [*cuts, rows.shape[0]], strict=True):
        tally.add(rows[lo:hi])
    audit = tally.result()
    w, length, short = spec.window, rows.shape[1], spec.near + 2
    picked = [rows[i * rows.shape[0] // wanted].tolist() for i in range(wanted)]  # spread evenly
    d_star = [oracle.question_lookback(spec.task, row, spec.modulus, spec.near, spec.far,
                                       spec.op, spec.op_key) for row in picked]  # fmt: skip
    assert audit.rows == wanted
    assert audit.short_by_position == [
        sum(d[i] <= short for d in d_star) for i in range(length - w)
    ]
    means = [round(sum(d[i] for d in d_star) / wanted, 4) for i in range(length - w)]
    assert audit.mean_by_position == means
    boundary = min(spec.train_length, length)
    for region, lo, hi in (("id", w, boundary), ("ood", boundary, length)):
        cells = [(d[t - w], oracle.rule_lookback(spec.task, t, spec.near, spec.far))
                 for d in d_star for t in range(lo, hi)]  # fmt: skip
        if not cells:
            assert getattr(audit, region) is None
            continue
        values = sorted(d for d, _ in cells)

        def lower(percent: int, values=values) -> int:  # smallest D with that share at or below
            return values[-(-percent * len(values) // 100) - 1]

        got = getattr(audit, region)
        assert (got.targets, got.short) == (len(values), sum(v <= short for v in values))
        assert got.shortcut == sum(d <= short and d < rule for d, rule in cells)
        assert (got.p10, got.median, got.p90) == (lower(10), lower(50), lower(90))
        assert got.histogram == {v: values.count(v) for v in set(values)}


@pytest.mark.parametrize("seeding", ["disjoint", "paper"])
def test_the_probe_check_counts_the_answers_a_loop_recomputes(
    oracle, small_dataset, small_paper_dataset, seeding
):
    folder = small_dataset if seeding == "disjoint" else small_paper_dataset
    report, checked = validate(folder), 0
    for config, entry in read_manifest(folder).configs.items():
        spec = entry.spec
        rule = (spec.modulus, spec.near, spec.far, spec.seed)
        for split in (s for s in spec.split_names if s.startswith("test")):
            probe = "probe" + split[len("test") :]
            rows = [
                oracle.probe_row(spec.task, source, i, *rule, probe, spec.op, spec.op_key)
                for i, source in enumerate(generate_split(spec, split).tolist())
            ]
            probed = sum(len(row["probed"]) for row in rows)
            telling = sum(
                answer != row["tokens"][t]
                for row in rows
                for t, answer in zip(row["probed"], row["far_rule"], strict=True)
            )
            check = next(
                c for c in report.checks if (c.check, c.config, c.split) == ("probe", config, probe)
            )
            assert check.ok
            assert f"{probed:,} far-rule answers recomputed, {telling:,} of them" in check.message
            checked += 1
    assert checked == 6  # three tasks, L' = 96 and 128
