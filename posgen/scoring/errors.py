"""The one error type of scoring: bad predictions or a reference that does not fit them.

Every message is one readable line; the CLI prints it as ``error: ...`` and exits 2.
"""

from __future__ import annotations

from posgen.errors import UsageError


class ScoringError(UsageError, ValueError):
    """Predictions, ids or a reference that cannot be scored together (one line)."""
