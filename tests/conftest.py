"""Test setup: `datasets` works offline, in a temporary cache; hypothesis profiles."""

from __future__ import annotations

import os
import sys
import tempfile

import pytest
from hypothesis import HealthCheck, settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_CACHE", tempfile.mkdtemp(prefix="posgen-hf-cache-"))
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

settings.register_profile(
    "posgen", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=60
)
settings.load_profile("posgen")


@pytest.fixture
def fake_validator(monkeypatch):
    """Install the STAND-IN ``posgen.validate`` (see tests/fake_validate.py); returns it.

    Call ``fake_validator.fail("window")`` to make one kind of check fail.
    """
    import posgen
    from tests.fake_validate import make_module

    state = {}

    def install(fail=None):
        module = make_module(fail)
        monkeypatch.setitem(sys.modules, "posgen.validate", module)
        monkeypatch.setattr(posgen, "validate", module, raising=False)
        state["module"] = module
        return module

    install()

    class Handle:
        def fail(self, kind):
            return install(kind)

        @property
        def calls(self):
            return state["module"].calls

    return Handle()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Print what the hardening tests tried (bad inputs, kill points, damage cases)."""
    from tests.hardening_counts import summary_lines

    lines = summary_lines()
    if lines:
        terminalreporter.section("hardening")
        for line in lines:
            terminalreporter.write_line(line)
