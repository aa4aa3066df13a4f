"""The official cards in data_cards/ are exactly what the code renders (run `make cards`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from posgen.publish import publish_benchmark, scoring_baselines
from posgen.spec_files import resolve_benchmark

ROOT = Path(__file__).resolve().parents[2]
OFFICIAL = ["paper", "posgen-v1", "posgen-v2"]


@pytest.mark.parametrize("name", OFFICIAL)
def test_every_official_spec_has_a_card(name):
    assert (ROOT / "task_specs" / f"{name}.toml").is_file()
    assert (ROOT / "data_cards" / f"{name}.md").is_file(), "run `make cards`"


@pytest.mark.parametrize("name", OFFICIAL)
def test_official_card_matches_what_the_code_renders(name, tmp_path):
    bench = resolve_benchmark(ROOT / "task_specs" / f"{name}.toml")
    published = publish_benchmark(bench, tmp_path / name, baselines=scoring_baselines)
    rendered = (published.folder / "README.md").read_text()
    committed = (ROOT / "data_cards" / f"{name}.md").read_text()
    assert rendered == committed, f"data_cards/{name}.md is stale: run `make cards`"
