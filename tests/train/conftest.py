"""Fixtures of the training tests: plugin modules written to a folder on ``sys.path``."""

from __future__ import annotations

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
