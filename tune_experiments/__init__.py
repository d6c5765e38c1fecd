"""Named Ray Tune experiments: one small declarative module each, defining ``EXPERIMENT``.

``metaadv tune --list`` shows them; ``metaadv tune NAME [--smoke]`` runs one. A path to a .py
file that defines ``EXPERIMENT`` works as well (your own experiment, without editing this package).
"""

from __future__ import annotations

# The registry lives in a submodule so that it imports the same way whether this folder is a
# regular package or (in an editable install made before this file existed) a namespace package.
from .registry import AVAILABLE, NOT_YET_AVAILABLE, list_experiments, load_experiment

__all__ = ["AVAILABLE", "NOT_YET_AVAILABLE", "load_experiment", "list_experiments"]
