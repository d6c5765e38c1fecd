"""TPE (Optuna) proposes TRADES settings; ASHA stops the weak ones at rungs of 2, 4, ... rounds."""

from metaadv.tune.experiment import Experiment, Size
from metaadv.tune.space import Grid, LogRange, Range

EXPERIMENT = Experiment(
    name="asha_optuna_trades",
    description="Optuna TPE + ASHA: TRADES on mnist5k over beta, eps, steps, step_ratio, lr, weight_decay",
    base={"method": "trades", "dataset": "mnist5k", "eps_ramp_rounds": 0},
    space={
        "trades_beta": Range(1.0, 10.0),
        "eps": Grid(0.2, 0.25, 0.3, 0.35),
        "steps": Grid(3, 5, 10),
        "step_ratio": Grid(0.1, 0.25, 0.5),
        "lr": LogRange(1e-4, 3e-3),
        "weight_decay": LogRange(1e-6, 1e-3),
    },
    threat_eps=0.3,
    sizes={
        # No stopping before round 2 (smoke) / epoch 4: early robust accuracy favours collapsed
        # one-class models (see _pgd_at.BURN_IN).
        "smoke": Size(8, {"rounds": 6, "steps_per_round": 15, "val_size": 200, "val_pgd_steps": 10,
                           "val_eps": 0.2}, max_concurrent=2,
                      scheduler_options={"grace_period": 2}),
        "full": Size(48, {"rounds": 20, "steps_per_round": 0, "val_size": 500, "val_pgd_steps": 20}, max_concurrent=8,
                     scheduler_options={"grace_period": 4}),
    },
    scheduler="asha", searcher="optuna", metric="val/robust_acc", mode="max",
    scheduler_options={"reduction_factor": 2},
)
