"""What each task measures: one sentence per task from the probe figures, in cards and results."""

from __future__ import annotations

import pytest

from posgen import write_dataset
from posgen.card.tasks import measure_sentence, measures_section
from posgen.spec import default_benchmark
from posgen.store.manifest import read_manifest


def _cell(accuracy_id: float, far_id: float | None) -> dict:
    cell = {"n": 1, "id_mean": accuracy_id, "ood_mean": 0.3}
    if far_id is not None:
        cell |= {"far_id_mean": far_id, "far_ood_mean": 0.01}
    return cell


@pytest.mark.parametrize(
    ("accuracy_id", "far_id", "verdict"),
    [
        (0.98, 0.001, "measures whether a local rule keeps working at unseen positions"),
        (0.98, 0.85, "measures a far dependency at unseen positions"),
        (0.90, 0.50, "measures a mix of a local rule and a far read"),
        (0.05, 0.02, "measures little at this training budget"),
        (0.98, None, "has no probe figures yet"),
    ],
)
def test_the_sentence_follows_far_reliance_and_accuracy(accuracy_id, far_id, verdict):
    sentence = measure_sentence("bench", "cot", "rope", _cell(accuracy_id, far_id))
    assert sentence.startswith(f"cot on bench {verdict}")
    assert f"accuracy {accuracy_id:.3f} ID" in sentence


def test_the_card_section_appears_only_for_the_spec_ids_the_models_were_trained_on(tmp_path):
    bench = default_benchmark(["cot"], train_size=20, val_size=5, test_size=5, train_length=16)
    write_dataset(bench, tmp_path / "ds")
    manifest = read_manifest(tmp_path / "ds")
    spec_ids = {"cot": manifest.configs["cot"].spec_id}
    entry = {"spec_ids": spec_ids, "tasks": {"cot": {"rope": _cell(0.98, 0.001)}}}
    section = measures_section(manifest, {manifest.benchmark.name: entry})
    assert section.splitlines()[0] == "## What each task measures"
    assert f"- cot on {manifest.benchmark.name} measures whether a local rule" in section
    other = {**entry, "spec_ids": {"cot": "0" * 16}}
    assert measures_section(manifest, {manifest.benchmark.name: other}) == ""
