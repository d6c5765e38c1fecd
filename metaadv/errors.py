"""The one exception type a user is meant to see.

Anything raised as `UserError` is printed by the CLI as a single line (no traceback) and the
process exits with status 2. Raise it for bad input the user can fix: unknown names, values out
of range, missing data folders, unreadable or mismatched checkpoints.
"""

__all__ = ["UserError"]


class UserError(ValueError):
    """Bad input that the user can fix; the message says what was wrong and what to do."""
