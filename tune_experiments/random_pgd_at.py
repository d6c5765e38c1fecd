"""Random search over the pbt_pgd_at space, same budget: the baseline PBT/PB2 must beat."""

from metaadv.tune.experiment import Experiment

from ._pgd_at import BASE, SIZES, SPACE, THREAT_EPS

EXPERIMENT = Experiment(
    name="random_pgd_at",
    description="random search baseline: the pbt_pgd_at space and budget, hyperparameters fixed per trial",
    base=BASE, space=SPACE, sizes=SIZES, threat_eps=THREAT_EPS,
    scheduler="fifo", searcher="random", metric="val/robust_acc", mode="max",
)
