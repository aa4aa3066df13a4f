"""``python -m posgen`` and the ``posgen`` script.

:func:`run` catches SIGINT, SIGTERM and SIGHUP before the commands are imported (about half
a second), so a signal at any moment after the interpreter starts ends in one line and
exit 130, 143 or 129 (:mod:`posgen.signals`), never a traceback or a silent death.
"""

from __future__ import annotations


def run() -> None:
    """Install the signal handlers, then import and run the command line."""
    from posgen import signals

    signals.install()
    signals.hold()  # a signal while the commands are imported is raised once the CLI runs
    signals.point("startup")
    from posgen.cli import main

    main(prog_name="posgen")


if __name__ == "__main__":
    run()
