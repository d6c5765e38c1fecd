"""Flag value types whose refusal is one line (``metaadv: error: --eps ...``, exit 2).

argparse turns a ``type=`` function's ``ValueError`` into its usage block plus a generic message.
:class:`FlagError` is deliberately not a ``ValueError``: argparse lets it through, and
:func:`metaadv.cli.main` prints it as the one line every other bad input gets.
"""

from __future__ import annotations

import math
from typing import Callable

__all__ = ["FlagError", "eps_value"]


class FlagError(Exception):
    """A flag's value that cannot be read; the message names the flag and what it expects."""


def _number(text: str) -> float:
    if "/" in text:
        top, bottom = text.split("/", 1)
        top, bottom = float(top), float(bottom)
        if bottom == 0:
            raise ValueError("division by zero")
        return top / bottom
    return float(text)


def eps_value(flag: str) -> Callable[[str], float]:
    """The ``type=`` of an eps-like flag: a number (``0.03``) or a fraction (``8/255``), finite.

    Ranges are the config's and the evaluator's to check (an l2 radius may exceed 1)."""

    def parse(text: str) -> float:
        try:
            value = _number(text.strip())
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise FlagError(f"{flag} {text!r}: give a finite number or a fraction, e.g. 0.03 or 8/255")
        return value

    parse.__name__ = "eps"
    return parse
