"""An interrupted run resumed from its folder, next to the same run left alone: the resume tests' setup."""

from __future__ import annotations

import pytest

from metaadv.training.metrics import read_metrics_csv
from metaadv.training.run import run_training


class Interrupt(Exception):
    pass


def without_seconds(rows: list[dict]) -> list[dict]:
    """Rows minus ``cost/seconds``, the one column a resumed run cannot reproduce."""
    return [{k: v for k, v in r.items() if k != "cost/seconds"} for r in rows]


def interrupted_and_full(config, tmp_path, stop_round: int = 2):
    """Train ``config`` uninterrupted in ``full/`` and up to ``stop_round`` in ``part/``, then resume
    ``part/``; returns (full run, resumed run, rows written in ``part/`` before resuming)."""
    full = run_training(config, tmp_path / "full")

    def stop(row, run):
        if row["round"] == stop_round:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_training(config, tmp_path / "part", on_row=stop)
    written = read_metrics_csv(tmp_path / "part" / "metrics.csv")
    resumed = run_training(config, tmp_path / "part", resume=True)
    return full, resumed, written
