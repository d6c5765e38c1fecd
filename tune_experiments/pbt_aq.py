"""PBT over Adversarial Querying (Goldblum, Fowl, Goldstein 2020, arXiv:1910.00982): inner and outer learning rates.

AQ's training attack is PGD on the query set against the adapted model (``attack: pgd``, 7 steps
as the paper's, step 0.25 eps). eps is the threat model, fixed: meta-validation attacks at the
run's own eps, so searching it would move the metric (see metaadv/tune/meta_kind.py). The attack's
steps are not searched either: they change what a round costs, and PBT here compares trials by
rounds (``time_attr: training_iteration``).
"""

from metaadv.tune.experiment import Experiment, Size
from metaadv.tune.space import LogRange

EXPERIMENT = Experiment(
    name="pbt_aq",
    description="PBT: Adversarial Querying (PGD-7 queries) on mnist5k-rot, mutating inner_lr/meta_lr every 2 rounds after 2",
    kind="meta",
    base={"method": "aq", "dataset": "mnist5k-rot", "ways": 3, "shots": 1, "queries": 5, "attack": "pgd",
          "attack_steps": 7, "step_ratio": 0.25},
    space={
        "inner_lr": LogRange(0.02, 0.3),
        "meta_lr": LogRange(1e-4, 3e-3),
    },
    threat_eps=0.2,
    sizes={
        "smoke": Size(4, {"rounds": 6, "steps_per_round": 5, "val_tasks": 10, "val_pgd_steps": 5}),
        "full": Size(8, {"rounds": 20, "steps_per_round": 30, "val_tasks": 50, "val_pgd_steps": 10}),
    },
    scheduler="pbt", metric="val/robust_acc", mode="max",
    scheduler_options={"perturbation_interval": 2, "burn_in_period": 2, "quantile_fraction": 0.25,
                       "resample_probability": 0.25},
)
