"""PB2 (GP-bandit PBT, Parker-Holder et al. 2020) over the same PGD-AT space as pbt_pgd_at."""

from metaadv.tune.experiment import Experiment

from ._pgd_at import BASE, BURN_IN, PB2_SPACE, SIZES, THREAT_EPS

EXPERIMENT = Experiment(
    name="pb2_pgd_at",
    description="PB2: PGD-AT on mnist5k, a GP bandit picks eps/step_ratio/steps (snapped to grids), lr, weight_decay",
    base=BASE, space=PB2_SPACE, sizes=SIZES, threat_eps=THREAT_EPS,
    scheduler="pb2", metric="val/robust_acc", mode="max",
    # PB2 has no burn-in: its first perturbation waits one (longer) interval instead.
    scheduler_options={"perturbation_interval": BURN_IN, "quantile_fraction": 0.25},
)
