"""A position-encoding plugin written from the README alone: listed, trained, in the results.

The README's plugin (its ``# mype/__init__.py`` and ``# pyproject.toml`` blocks) is written
to a temporary folder on ``sys.path`` with a ``dist-info`` holding its entry points (what
``pip install`` would write), so ``importlib.metadata`` finds it like an installed package.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")


if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--layers", "1", "--hidden", "16", "--heads", "2", "--intermediate", "32"]
FAST = [*TINY, "--epochs", "1", "--max-steps", "2", "--seed", "1", "-q"]


def readme_block(first_line: str) -> str:
    """The README code block whose first line is ``first_line``."""
    blocks = re.findall(r"^```\w*\n(.*?)^```", (ROOT / "README.md").read_text(), re.M | re.S)
    matches = [block for block in blocks if block.splitlines()[0] == first_line]
    assert len(matches) == 1, first_line
    return matches[0]


@pytest.fixture
def installed(tmp_path, monkeypatch) -> dict:
    """The README's plugin, "installed" into a temporary site folder."""
    site = tmp_path / "site"
    (site / "mype").mkdir(parents=True)
    (site / "mype" / "__init__.py").write_text(readme_block("# mype/__init__.py"))
    project = tomllib.loads(readme_block("# pyproject.toml"))["project"]
    dist = site / f"{project['name']}-{project['version']}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    lines = []
    for group, points in project["entry-points"].items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {target}" for name, target in points.items()]
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n")
    monkeypatch.syspath_prepend(str(site))
    yield project
    sys.modules.pop("mype", None)


@pytest.fixture
def data(tiny_training_dataset) -> list[str]:
    return ["--data", str(tiny_training_dataset), "--config", "cot"]


def test_the_readme_plugin_installed_under_the_documented_group_shows_in_list_pe(cli, installed):
    assert list(installed["entry-points"]) == ["posgen.position_encodings"]
    result = cli("train", "--list-pe")
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("base500 "))
    assert "train-time" in line
    assert "entry point mype:BASE500 (mype)" in line


def test_installed_plugin_trains_and_ranks_in_the_results(cli, installed, data, tmp_path):
    out = tmp_path / "runs" / "ds" / "cot" / "base500" / "seed1"
    args = ["train", *data, "--pe", "base500", "--out", str(out), *FAST]
    result = cli(*args)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "results.json").read_text())
    assert record["position_encoding"]["rope_parameters"]["train"]["rope_type"] == "base500"
    report = tmp_path / "R.md"
    result = cli("results", str(tmp_path / "runs"), "--out", str(report))
    assert result.exit_code == 0, result.output
    assert "| 1 | base500 | 1 |" in report.read_text()


def test_plugin_frequencies_are_what_its_rope_function_returns(cli, installed, data, tmp_path):
    out = tmp_path / "run"
    args = ["train", *data, "--pe", "mype:BASE500", "--out", str(out)]
    result = cli(*args, *FAST, "--save-model")
    assert result.exit_code == 0, result.output
    from posgen.encodings.model import load_model

    model, _ = load_model(out / "model")
    want = 500.0 ** (-torch.arange(0, 8, 2, dtype=torch.float) / 8)
    torch.testing.assert_close(model.model.rotary_emb.inv_freq, want)


def test_a_module_reference_that_is_not_an_encoding_is_one_error_line(cli, data, tmp_path):
    args = ["train", *data, "--pe", "json:dumps", "--out", str(tmp_path / "r")]
    result = cli(*args)
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: --pe json:dumps is a function, not a posgen PositionEncoding"
    ]
