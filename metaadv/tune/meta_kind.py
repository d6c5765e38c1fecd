"""Meta-learning runs (:class:`metaadv.meta.run.MetaRun`) as a Tune run kind, ``kind: "meta"``.

Ray-free, like :mod:`metaadv.tune.kinds`. A meta run reads its hyperparameters from its config
every round, so building it from the trial config and loading weights, optimizer state and rows
from the checkpoint is already "the trial config wins".
"""

from __future__ import annotations

from ..errors import UserError
from ..meta.config import MetaConfig
from ..meta.run import MetaRun
from .run_kind import RunKind

__all__ = ["KIND", "build_meta_run", "restore_meta_run"]


def build_meta_run(values: dict, **placement) -> MetaRun:
    """A MetaRun from a trial config: MetaConfig keys plus an optional ``val_eps``.

    Meta-validation attacks at the run's own ``eps``, so an experiment fixes ``eps`` to its threat
    eps (``val_eps``) and searches other keys; a searched ``eps`` would move the metric itself.
    """
    values = dict(values)
    val_eps = values.pop("val_eps", None)
    if val_eps is not None:
        values.setdefault("eps", float(val_eps))
        if float(values["eps"]) != float(val_eps):
            raise UserError(f"meta-learning runs validate at their training eps; fix eps to the threat eps {val_eps} "
                            f"(got {values['eps']}) and search other keys")
    return MetaRun(MetaConfig.from_dict(values), **placement)


def restore_meta_run(run: MetaRun, state: dict) -> None:
    run.load_state_dict(state)


KIND = RunKind(build_meta_run, restore_meta_run, placed=True)
