"""The spec search's probe (benchmarks/probe_search.py) scores the reference predictors as
issue 16 defines: the far rule 1 and 0, the unaltered row 0 and 1; its look-back audit finds
posgen-v1 cot's two-token rule. No training here (the search itself is `make search`)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.probe_search import CANDIDATES, probe_rows, question_lookback, reliance
from posgen.generator import generate_split
from posgen.spec import TaskSpec
from posgen.tasks import dependency_matrix


def tiny(task: str, **fields) -> TaskSpec:
    return TaskSpec(task=task, train_length=24, test_length=64, train_size=5, val_size=5,
                    test_size=40, **fields)  # fmt: skip


SPECS = [("cot", {}), ("semirecursive", {}), ("cot", {"op": "far_perm", "op_key": 3}),
         ("semirecursive", {"op": "slot_perm", "far": 2})]  # fmt: skip


@pytest.mark.parametrize("task, fields", SPECS)
def test_the_far_rule_scores_far_reliance_one_and_the_unaltered_row_local_reliance_one(
    task, fields
):
    spec = tiny(task, **fields)
    tokens = generate_split(spec, "test").astype(np.int64)
    probe = probe_rows(spec, tokens, seed=1)
    far_rule = np.concatenate([tokens[:, : spec.window], probe["far"]], axis=1)
    for name in ("id", "ood"):
        assert reliance(spec, probe, far_rule)[name]["far"] == 1.0
        assert reliance(spec, probe, far_rule)[name]["local"] == 0.0
        assert reliance(spec, probe, tokens)[name]["far"] == 0.0
        assert reliance(spec, probe, tokens)[name]["local"] == 1.0


@pytest.mark.parametrize("task, fields", SPECS)
def test_probed_targets_have_a_far_operand_altered_and_no_near_operand(task, fields):
    spec = tiny(task, **fields)
    tokens = generate_split(spec, "test").astype(np.int64)
    probe = probe_rows(spec, tokens, seed=2)
    altered = probe["rows"] != tokens
    deps = dependency_matrix(spec.task, tokens.shape[1], spec.near, spec.far)
    rows, cols = np.nonzero(probe["probed"])
    assert rows.size > 0
    assert altered[rows[:, None], deps[cols, : spec.far]].any(axis=1).all()
    assert not altered[rows[:, None], deps[cols, spec.far :]].any()


def test_the_look_back_audit_finds_posgen_v1_cots_two_token_rule():
    # x_t = 2 x_{t-1} - x_{t-4}: every t > w is decided by x_{t-4} .. x_{t-1} (D = k + 1)
    spec = tiny("cot")
    summary = question_lookback(spec, generate_split(spec, "test")[:5])
    assert summary["ood"]["share_le_k+2"] == 1.0
    assert summary["ood"]["median"] == spec.near + 1


def test_every_candidate_names_a_spec_file_and_a_config_in_it():
    from benchmarks.probe_search import ROOT
    from posgen.spec import resolve_benchmark

    for candidate in CANDIDATES.values():
        assert candidate.config in resolve_benchmark(ROOT / candidate.spec).configs
