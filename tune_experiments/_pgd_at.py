"""What the PGD-AT searches share: the space over attack and training hyperparameters, the sizes.

The searched ``eps`` is the *training* radius; every trial is validated at ``THREAT_EPS`` so the
population is compared under one threat model (MNIST's usual 0.3; 0.2 in the smoke size).
"""

from metaadv.tune.space import Grid, LogRange, Range
from metaadv.tune.experiment import Size

THREAT_EPS = 0.3

BASE = {"method": "pgd-at", "dataset": "mnist5k", "optimizer": "adam", "eps_ramp_rounds": 0, "batch_size": 100}

# Attack strength and cost (eps, step_ratio, steps) on grids, the optimizer on log ranges.
SPACE = {
    "eps": Grid(0.1, 0.15, 0.2, 0.25, 0.3, 0.35),
    "step_ratio": Grid(0.1, 0.25, 0.5, 1.0),
    "steps": Grid(1, 2, 3, 5, 7, 10),
    "lr": LogRange(1e-4, 3e-3),
    "weight_decay": LogRange(1e-6, 1e-3),
}

# PB2 fits a GP on linear bounds: same dimensions, ranges linear.
PB2_SPACE = {**SPACE, "lr": Range(1e-4, 3e-3), "weight_decay": Range(0.0, 1e-3)}

# smoke: minutes on 2 CPUs (4 trials x 8 rounds of 25 steps); full: 16 trials x 20 epochs.
# The smoke size validates at eps 0.2: 200 steps rarely reach robustness at 0.3, and there a
# collapsed one-class model (robust = clean = ~0.2) outscores every real one. A smoke run at 0.3
# ended with all four trials cloned from such a model; at 0.2 a real one scores ~0.8.
SMOKE = {"rounds": 8, "steps_per_round": 25, "val_size": 200, "val_pgd_steps": 10, "val_eps": 0.2}
FULL = {"rounds": 20, "steps_per_round": 0, "val_size": 500, "val_pgd_steps": 20}

SIZES = {"smoke": Size(4, SMOKE), "full": Size(16, FULL)}

# The same trap in the first rounds of any size: no exploit before round 4 (100 steps in the smoke
# size, 4 epochs in the full one), when real models have left chance level.
BURN_IN = 4
