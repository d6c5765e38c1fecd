"""Optuna multi-objective TPE: the clean vs robust accuracy trade-off of PGD-AT, as a Pareto front.

``adv_mix`` (weight of the adversarial loss) and the training eps move a model along the trade-off;
both accuracies are measured at the fixed threat model, so the front is comparable.
"""

from metaadv.tune.experiment import Experiment, Size
from metaadv.tune.space import Grid, LogRange, Range

EXPERIMENT = Experiment(
    name="optuna_multiobjective",
    description="Optuna TPE, two objectives: clean vs robust accuracy of PGD-AT on mnist5k (Pareto front)",
    base={"method": "pgd-at", "dataset": "mnist5k", "eps_ramp_rounds": 0},
    space={
        "adv_mix": Range(0.0, 1.0),
        "eps": Grid(0.1, 0.2, 0.3, 0.4),
        "steps": Grid(3, 5, 10),
        "lr": LogRange(1e-4, 3e-3),
    },
    threat_eps=0.3,
    sizes={
        "smoke": Size(6, {"rounds": 4, "steps_per_round": 20, "val_size": 200, "val_pgd_steps": 10, "val_eps": 0.2}, max_concurrent=2),
        "full": Size(40, {"rounds": 20, "steps_per_round": 0, "val_size": 500, "val_pgd_steps": 20}, max_concurrent=8),
    },
    scheduler="fifo", searcher="optuna",
    metric=("val/clean_acc", "val/robust_acc"), mode=("max", "max"),
)
