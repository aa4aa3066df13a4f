"""``python -m posgen`` and the ``posgen`` script: signal handlers are installed before the
commands are imported, so a signal at any moment ends in one line and 130, 143 or 129."""

from __future__ import annotations

import sys


def run(args: list[str] | None = None) -> None:
    """Install the signal handlers, then import and run the command line."""
    from posgen import signals

    signals.install()
    try:
        with signals.held():  # a signal while the commands are imported is raised once the CLI runs
            signals.point("startup")
            from posgen.cli import main
    except (ImportError, MemoryError, OSError) as error:  # a library that cannot load (ulimit -v)
        reason = " ".join(str(error).split())[:500] or "a library could not be loaded"
        print(f"error: posgen cannot start ({type(error).__name__}): {reason}", file=sys.stderr)
        sys.exit(1)

    try:
        main(args, prog_name="posgen")
    except SystemExit as done:  # PosgenGroup.main always ends in sys.exit
        code = done.code if isinstance(done.code, int) else int(done.code is not None)
    signals.point("exit")
    late = signals.received()  # held since the command reported its outcome
    signals.ignore()  # nothing after this point dies of a signal
    if late is not None and code == 0:
        name = signals.Interrupted(late).name
        print(f"error: interrupted by {name} after the command had finished; its outputs "
              "are complete", file=sys.stderr)  # fmt: skip
        code = 128 + late
    sys.exit(code)


if __name__ == "__main__":
    run()
