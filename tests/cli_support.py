"""Running the CLI in tests (``invoke``, also the ``cli`` fixture) and what "failed cleanly"
means, in one place (``assert_clean_error``)."""

from __future__ import annotations

import os
import subprocess

from click.testing import CliRunner, Result


def invoke(*args: object, env: dict[str, str] | None = None, **kwargs) -> Result:
    """Run ``posgen *args`` in-process, with the entry point's signal handlers; the click
    ``Result`` (paths and numbers become text).

    Since click 8.2 ``CliRunner`` keeps the streams apart: ``result.stdout``,
    ``result.stderr``, and ``result.output`` with both interleaved as a terminal shows them.
    """
    from posgen import signals
    from posgen.cli import main

    argv = [os.fspath(a) if isinstance(a, os.PathLike) else str(a) for a in args]
    previous = signals.install()  # as the entry point (posgen.__main__) does
    try:
        return CliRunner().invoke(main, argv, env=env, **kwargs)
    finally:
        signals.restore(previous)


def error_lines(text: str) -> list[str]:
    """The ``error: ...`` lines of ``text``."""
    return [line for line in text.splitlines() if line.startswith("error: ")]


def assert_clean_error(
    result: Result | subprocess.CompletedProcess, code: int | tuple[int, ...], *fragments: str
) -> str:
    """Assert ``result`` failed cleanly; return its one error line.

    Cleanly: the exit ``code`` (or one of a tuple of codes), exactly one line on stderr that
    starts ``error: ``, every fragment in that line, and no traceback (nor an exception that
    escaped the command). ``result`` is a click ``Result`` or a finished subprocess (run with
    ``text=True`` and stderr captured).
    """
    if isinstance(result, subprocess.CompletedProcess):
        exit_code, stderr, output = result.returncode, result.stderr, result.stderr
    else:
        exit_code, stderr, output = result.exit_code, result.stderr, result.output
        escaped = result.exception is not None and not isinstance(result.exception, SystemExit)
        assert not escaped, repr(result.exception)
    codes = code if isinstance(code, tuple) else (code,)
    assert exit_code in codes, output
    assert "Traceback" not in output, output
    lines = error_lines(stderr)
    assert len(lines) == 1, stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]
