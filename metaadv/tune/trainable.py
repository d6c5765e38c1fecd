"""The Ray Tune function trainable: one metrics row and one checkpoint per round.

Every report carries a checkpoint because PBT can exploit only a trial whose report at the
perturbation interval has one, and because a retried or resumed trial restarts from the last one.
Rows are reported with their own '/' names (``val/robust_acc``): Tune looks metrics up by the
flat key first and writes them unchanged to result.json and progress.csv, so the row stays the
contract and nothing is renamed.

A diverged trial (loss NaN/inf) reports one last row with ``status="diverged"``, the message in
``error`` and NaN for the metrics, and returns: the trial ends TERMINATED, without the retries a
raised error would trigger (each would diverge again from the same checkpoint). NaN is the value
every Ray component already treats as "no score": ASHA's cutoffs use nanpercentile, Optuna records
the trial as failed, and best-result lookups skip it; metaadv's PBT and PB2 rank it worst at once
(:mod:`metaadv.tune.schedulers`). The row keeps the cost columns, PBT's possible ``time_attr``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import ray.tune
import torch

from ..checkpoint import CHECKPOINT_NAME, read_checkpoint, save_checkpoint, staging_folder
from .kinds import RunKind, get_kind

__all__ = ["make_trainable", "run_trial", "front_columns"]

# Ray 2.60's default progress table shows the first four numeric metrics of a result and ignores
# RunConfig.progress_reporter, so the row is reported with these keys first (same keys, new order).
KEY_COLUMNS = ("val/robust_acc", "val/clean_acc", "train/loss", "hp/eps")


def front_columns(metrics: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys([*metrics, *KEY_COLUMNS]))


def make_trainable(metrics: Sequence[str] = ("val/robust_acc",), extra_kinds: dict[str, RunKind] | None = None):
    """The function Tune runs per trial. ``extra_kinds`` travel with it (pickled) to every worker."""
    front = front_columns(metrics)

    def metaadv_trial(config: dict) -> None:
        run_trial(config, front, extra_kinds)

    return metaadv_trial


def run_trial(config: dict, front: Sequence[str], extra_kinds=None) -> None:
    kind = get_kind(config.get("kind", "train"), extra_kinds)
    _limit_threads()
    values = {k: v for k, v in config.items() if k != "kind"}
    device = _trial_device() if kind.placed else None
    run = kind.build(values) if device is None else kind.build(values, device=device)
    checkpoint = ray.tune.get_checkpoint()  # set on a retry, a resume, or a PBT exploit (the donor's)
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            kind.restore(run, read_checkpoint(Path(folder) / CHECKPOINT_NAME))
    while not run.done:
        try:
            row = run.step()
        except kind.diverged as exc:
            ray.tune.report(_diverged_row(run, exc, front))
            return
        with staging_folder() as folder:
            save_checkpoint(run.state_dict(), folder / CHECKPOINT_NAME)
            # Tune copies the folder into the trial's storage before report returns.
            ray.tune.report(_front(row, front), checkpoint=ray.tune.Checkpoint.from_directory(folder))


def _front(row: dict, front: Sequence[str]) -> dict:
    return {**{k: row[k] for k in front if k in row}, **row}


def _diverged_row(run, exc: BaseException, front: Sequence[str]) -> dict:
    nan = {k: math.nan for k in front if not k.startswith("hp/")}
    return {**nan, **_cost_so_far(run), "round": run.round + 1, "status": "diverged", "error": str(exc)}


def _cost_so_far(run) -> dict:
    """The cost columns at the divergence: PBT's ``time_attr`` may be one (``cost/grad_evals``),
    and PBT refuses a report without it. The last good row's values, plus the trainer's count of
    the work the diverged round did, where the run has one."""
    cost = {"cost/grad_evals": 0, "cost/eval_grad_evals": 0, "cost/seconds": 0.0}
    if run.rows:
        cost.update({k: v for k, v in run.rows[-1].items() if k in cost})
    for key, attr in (("cost/grad_evals", "grad_evals"), ("cost/eval_grad_evals", "eval_grad_evals")):
        counted = getattr(getattr(run, "trainer", None), attr, None)
        if isinstance(counted, int):
            cost[key] = counted
    return cost


def _trial_device() -> torch.device | None:
    """The CPU for a trial with no GPU in its resources, else None (the config's device).

    Ray 2.60 no longer hides a node's GPUs from actors that asked for none: ``device: auto``
    would put every CPU trial of a GPU node on a shared ``cuda:0``. Devices follow resources.
    """
    try:
        gpus = ray.tune.get_context().get_trial_resources().required_resources.get("GPU", 0)
    except Exception:  # outside a Tune trial (direct calls in tests)
        return None
    return torch.device("cpu") if not gpus else None


def _limit_threads() -> None:
    # torch would use every core of the node; a trial owns only the CPUs Tune gave it.
    try:
        cpus = ray.tune.get_context().get_trial_resources().required_resources.get("CPU", 1)
    except Exception:  # outside a Tune trial (direct calls in tests)
        return
    torch.set_num_threads(max(1, int(cpus)))
