"""PBT over meta-generator training: the generator's lr, steps and share of each batch, eps, lr.

The same sizes, threat model and burn-in as pbt_pgd_at, so the two populations are comparable.
"""

from metaadv.tune.experiment import Experiment
from metaadv.tune.space import Grid, LogRange

from ._pgd_at import BURN_IN, SIZES, THREAT_EPS

EXPERIMENT = Experiment(
    name="pbt_meta_generator",
    description="PBT: meta-generator AT on mnist5k, mutating eps/gen_steps/gen_fraction (grids), gen_lr/lr every 2 rounds after 4",
    base={"method": "meta-generator", "dataset": "mnist5k", "optimizer": "adam", "eps_ramp_rounds": 0, "batch_size": 100},
    space={
        "eps": Grid(0.2, 0.25, 0.3, 0.35),
        "gen_steps": Grid(1, 2, 3),
        "gen_fraction": Grid(0.5, 0.75, 1.0),  # the rest of each batch is attacked by PGD
        "gen_lr": LogRange(1e-4, 1e-2),
        "lr": LogRange(1e-4, 3e-3),
    },
    sizes=SIZES, threat_eps=THREAT_EPS,
    scheduler="pbt", metric="val/robust_acc", mode="max",
    scheduler_options={"perturbation_interval": 2, "burn_in_period": BURN_IN, "quantile_fraction": 0.25,
                       "resample_probability": 0.25},
)
