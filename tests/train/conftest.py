"""Fixtures of the training tests: plugin modules written to a folder on ``sys.path``, and
``posgen results`` of ``trained_runs`` run once for the tests that read its outputs."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


@pytest.fixture
def plugin_site(tmp_path, monkeypatch) -> Iterator[Callable[[str, str], Path]]:
    """``write(path, text)``: a file in ``tmp_path/site``, a folder on ``sys.path``; the modules
    imported from it are forgotten after the test."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))

    def write(path: str, text: str) -> Path:
        (site / path).parent.mkdir(parents=True, exist_ok=True)
        (site / path).write_text(text)
        return site / path

    yield write
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(site)):
            del sys.modules[name]


@pytest.fixture(scope="session")
def reported(cli, trained_runs, tmp_path_factory) -> dict[str, object]:
    """``posgen results`` of ``trained_runs`` with ``--json``, ``--plot c.png``, ``--command
    "make results"`` and ``--wall-seconds 600``: the table's text (``md``), the JSON (``json``)
    and the plot's path."""
    folder = tmp_path_factory.mktemp("reported")
    out, js, plot = folder / "R.md", folder / "r.json", folder / "c.png"
    args = ["results", trained_runs, "--out", out, "--json", js, "--plot", plot]
    args += ["--wall-seconds", "600"]
    result = cli(*args, "--command", "make results")
    assert result.exit_code == 0, result.output
    return {"md": out.read_text(), "json": json.loads(js.read_text()), "plot": plot}


@pytest.fixture(scope="session")
def edited_run() -> Callable[..., Path]:
    """``edited_run(source, dest, **sections)``: a copy of run folder ``source`` at ``dest``,
    its record's ``sections`` updated (``position_encoding={"label": ...}``)."""
    from posgen.train import RESULTS

    def edit(source: Path, dest: Path, **sections: dict) -> Path:
        run = shutil.copytree(source, dest)
        body = json.loads((run / RESULTS).read_text())
        for section, values in sections.items():
            body[section].update(values)
        (run / RESULTS).write_text(json.dumps(body))
        return run

    return edit
