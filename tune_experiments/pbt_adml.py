"""PBT over ADML (Yin et al. 2018): the crossed-loss weights and the inner and outer learning rates.

eps is the threat model, fixed: meta-validation attacks at the run's own eps, so searching it
would move the metric (see metaadv/tune/meta_kind.py).
"""

from metaadv.tune.experiment import Experiment, Size
from metaadv.tune.space import Grid, LogRange

EXPERIMENT = Experiment(
    name="pbt_adml",
    description="PBT: ADML on mnist5k-rot (rotated-digit classes), mutating beta1/beta2 (grids), inner_lr/meta_lr "
                "every 2 rounds after 2",
    kind="meta",
    # mnist5k-rot: 17 meta-train classes instead of mnist5k's 6 (metaadv/meta/rotated_digits.py).
    base={"method": "adml", "dataset": "mnist5k-rot", "ways": 3, "shots": 1, "queries": 5, "attack": "fgsm"},
    space={
        "beta1": Grid(0.25, 0.5, 0.75),  # weight of L(theta'_clean, adversarial query)
        "beta2": Grid(0.25, 0.5, 0.75),  # weight of L(theta'_adv, clean query)
        "inner_lr": LogRange(0.02, 0.3),
        "meta_lr": LogRange(1e-4, 3e-3),
    },
    threat_eps=0.2,
    sizes={
        "smoke": Size(4, {"rounds": 6, "steps_per_round": 10, "val_tasks": 10, "val_pgd_steps": 5}),
        "full": Size(8, {"rounds": 20, "steps_per_round": 30, "val_tasks": 50, "val_pgd_steps": 10}),
    },
    scheduler="pbt", metric="val/robust_acc", mode="max",
    scheduler_options={"perturbation_interval": 2, "burn_in_period": 2, "quantile_fraction": 0.25,
                       "resample_probability": 0.25},
)
