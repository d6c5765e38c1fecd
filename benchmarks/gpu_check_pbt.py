"""Part (c) of benchmarks/gpu_check.py: one short PBT experiment, two trials sharing one device.

PGD-AT on sklearn's digits (no download, no mlxtend), PBT after every round from round 1, in
PBT's synchronous mode: both trials wait for each other at each round's end, and with two
trials and quantile 0.5 one of them is always the lower one, so each of the three perturbations
of a four-round run is an exploit. (In the default asynchronous mode a target can exploit a donor
only if the donor was in the upper quantile at its own last perturbation, which depends on the
order the reports arrive in: one CPU run here logged no exploit at all, the next one.)
The trials' device comes from ``METAADV_GPU_CHECK_DEVICE`` (``cuda`` on the GPU machine, with
``--gpus-per-trial 0.5``: a trial that cannot see its share of the GPU then fails loudly instead
of training on the CPU; ``cpu`` for the CPU run of the check).

    metaadv tune benchmarks/gpu_check_pbt.py --smoke --samples 2 --gpus-per-trial 0.5 ...
"""

import os

from metaadv.tune.experiment import Experiment, Size
from metaadv.tune.space import Grid, LogRange

ROUNDS = 4

EXPERIMENT = Experiment(
    name="gpu_check_pbt",
    description="gpu_check part (c): PBT, 2 PGD-AT trials on digits sharing one device, exploit every round",
    base={"method": "pgd-at", "dataset": "digits", "optimizer": "adam", "eps_ramp_rounds": 0, "batch_size": 64,
          "steps": 5, "device": os.environ.get("METAADV_GPU_CHECK_DEVICE", "auto")},
    space={"eps": Grid(0.1, 0.15, 0.2), "lr": LogRange(3e-4, 3e-3)},
    sizes={"smoke": Size(2, {"rounds": ROUNDS, "steps_per_round": 10, "val_size": 100, "val_pgd_steps": 5})},
    threat_eps=0.2, scheduler="pbt", metric="val/robust_acc", mode="max",
    scheduler_options={"perturbation_interval": 1, "burn_in_period": 0, "quantile_fraction": 0.5,
                       "resample_probability": 0.25, "synch": True},
)
