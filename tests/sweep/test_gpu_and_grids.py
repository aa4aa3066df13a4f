"""The GPU path of sweeps (several runs on one device, bf16) and the shipped grids."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from posgen.cli.sweep import resolve_encoding  # noqa: E402
from posgen.train import sweep as sweep_module  # noqa: E402
from posgen.train.config import expand, identity, jobs_of, preset, read_grid, stable_hash  # noqa: E402

GRIDS = Path(__file__).resolve().parents[2] / "grids"


def test_several_workers_share_one_gpu(tmp_path, monkeypatch):
    seen = []

    class Popen:
        def __init__(self, command, **kwargs):
            seen.append(kwargs["env"].get("CUDA_VISIBLE_DEVICES"))

    monkeypatch.setattr(sweep_module.subprocess, "Popen", Popen)
    sweep = sweep_module.Sweep(tmp_path / "S")
    sweep.logs.mkdir(parents=True)
    job = type("Job", (), {"key": "k"})()
    for slot in range(3):
        sweep_module._start(sweep, job, slot, ["0"])
    assert seen == ["0", "0", "0"]


def test_bf16_off_leaves_every_run_name_as_it_was():
    config = preset("cpu")
    named = identity("d", "s", "cot", "cpu", config, 1, pe="rope")
    assert "bf16" not in named["train"]
    assert stable_hash(named) == stable_hash(
        {**named, "train": config.model_dump(mode="json", exclude={"bf16"})}
    )
    on = identity("d", "s", "cot", "cpu", preset("cpu", bf16=True), 1, pe="rope")
    assert on["train"]["bf16"] is True and stable_hash(on) != stable_hash(named)


def test_the_grids_in_the_repo_and_the_readme_grid_are_valid_grids(tmp_path):
    from posgen.encodings import available

    paper = ["rope", "yarn", "resonance", "resonance_yarn"]
    assert [pe.name for pe in read_grid(GRIDS / "paper.toml").pes] == paper
    built_in = {name for name, pe in available().items() if pe.source == "built-in"}
    assert set(paper) < built_in  # results.toml's "builtin" has the paper's four too
    grid = read_grid(GRIDS / "results.toml")  # make results: posgen-v1, no posgen-v2, one seed
    assert [p.name for p in grid.datasets] == ["posgen-v1"]
    assert grid.pes == "builtin"
    assert grid.seeds == [5549]  # three seeds do not fit the 3-hour budget on 2 cores
    assert [(p.name, p.overrides) for p in grid.presets] == [("cpu", {})]
    paper = read_grid(GRIDS / "results-paper.toml")
    assert [p.name for p in paper.datasets] == ["paper"]
    assert {pe.name for pe in paper.pes} == {"rope", "yarn", "linear", "llama3"} | {
        f"resonance{suffix}" for suffix in ("", "_yarn", "_linear", "_llama3")
    }
    assert (paper.seeds, paper.presets) == (grid.seeds, grid.presets)
    assert preset("cpu").seeds == [5549, 4955, 42]
    every = read_grid(GRIDS / "results-all.toml")
    assert [p.name for p in every.datasets] == ["posgen-v1", "posgen-v2", "paper"]
    assert every.pes == "all"
    section = (GRIDS.parent / "README.md").read_text().split("### Sweeps", 1)[1]
    (tmp_path / "readme.toml").write_text(section.split("```toml\n", 1)[1].split("```", 1)[0])
    assert read_grid(tmp_path / "readme.toml").slurm.max_parallel == 20


def test_paper_gpu_grid_is_the_paper_preset_on_cot_rope_against_resonance_one_seed(
    tiny_training_dataset,
):
    grid = read_grid(GRIDS / "paper-gpu.toml")
    assert [p.name for p in grid.datasets] == ["paper"]
    assert grid.configs == ["cot"]
    assert [pe.name for pe in grid.pes] == ["rope", "resonance"]
    assert grid.seeds == [5549]
    (entry,) = grid.presets
    config = entry.resolved()
    paper = preset("paper")
    assert entry.name == "paper" and config.bf16 and config.epochs == 60 < paper.epochs
    assert config.model_dump(exclude={"epochs", "bf16"}) == paper.model_dump(
        exclude={"epochs", "bf16"}
    )
    here = grid.model_copy(update={"datasets": [tiny_training_dataset]})
    runs = expand(here, resolve_encoding)
    assert len(runs) == 2 and len(jobs_of(runs)) == 2  # two trainings side by side
