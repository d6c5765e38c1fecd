"""PBT over PGD-AT's attack (eps, step ratio, steps) and optimizer (lr, weight decay)."""

from metaadv.tune.experiment import Experiment

from ._pgd_at import BASE, BURN_IN, SIZES, SPACE, THREAT_EPS

EXPERIMENT = Experiment(
    name="pbt_pgd_at",
    description="PBT: PGD-AT on mnist5k, mutating eps/step_ratio/steps (grids), lr/weight_decay every 2 rounds after 4",
    base=BASE, space=SPACE, sizes=SIZES, threat_eps=THREAT_EPS,
    scheduler="pbt", metric="val/robust_acc", mode="max",
    scheduler_options={"perturbation_interval": 2, "burn_in_period": BURN_IN, "quantile_fraction": 0.25,
                       "resample_probability": 0.25},
)
