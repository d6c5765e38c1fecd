"""The metrics row: one flat dict per round, the contract everything downstream reads.

Stable column names (see docs/training.md, "The metrics row"):

- ``round`` (1-based), ``step`` (optimizer steps so far), ``epoch`` (examples seen / train size)
- ``train/loss``, ``train/adv_acc`` (accuracy on the examples trained against, this round)
- ``val/clean_acc``, ``val/robust_acc`` (PGD on the fixed validation subset), ``val/eps``
- ``hp/<name>`` for every hyperparameter in force this round (:class:`HParams`), ``hp/step_size``
- ``cost/grad_evals``: cumulative training forward+backward passes summed over examples (a
  batch of B trained with PGD-k adds B * (k + 1)); ``cost/eval_grad_evals``: the same for the
  per-round validation attack; ``cost/reward_grad_evals``: the same for the policy controller's
  reward check (0 for other controllers); ``cost/seconds``: cumulative wall time of the rounds.
- ``policy/*`` (``--controller policy``): its reward check on the round's fresh validation batch
  (``policy/robust_acc_before``, ``policy/robust_acc``, ``policy/clean_acc``, ``policy/fgsm_acc``),
  ``policy/reward``, ``policy/cost``, ``policy/gap``, ``policy/entropy``, and ``policy/return``,
  ``policy/return_round``, ``policy/baseline`` of the return completed that round (see
  metaadv/training/policy.py).
- ``las/*`` (``--controller las``, docs/las.md): the per-example choices' mean and quantiles
  (``las/eps_mean``, ``las/eps_q10``, ``las/eps_q90``, likewise ``steps`` and ``step_ratio``),
  ``las/reward`` and its terms, ``las/updates``, ``las/kl`` (KL to the initial, uniform strategy).
- method extras, e.g. ``train/co_detected`` and ``train/grad_align`` (``co_guard`` runs), ``gen/*``.
"""

from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path

__all__ = ["write_metrics_csv", "read_metrics_csv", "METRICS_NAME"]

METRICS_NAME = "metrics.csv"


def write_metrics_csv(rows: list[dict], path: str | Path, columns: list[str] | None = None) -> None:
    """Write ``rows`` atomically: ``columns`` only if given, else the union of keys in first-seen order."""
    path = Path(path)
    if columns is None:
        columns = []
        for row in rows:
            columns += [k for k in row if k not in columns]
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".csv")
    with os.fdopen(fd, "w", newline="") as f:
        # "\n", not the csv module's "\r\n": cut, awk and grep -x then read the last column cleanly.
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def read_metrics_csv(path: str | Path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _number(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text
