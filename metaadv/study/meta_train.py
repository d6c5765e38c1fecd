"""Phase 1, continued: each ``deployed`` arm's policy, meta-trained across whole runs of the arm's
own config (:func:`metaadv.training.policy_train.train_policy`, episodes as Ray tasks) into
``meta/ARM``, resumable; phase 2 deploys ``meta/ARM/policy.pt`` frozen on the arm's seeds."""

from __future__ import annotations

import shutil
from pathlib import Path

from .folder import StudyOptions
from .progress import Progress
from .spec import Arm, Study

__all__ = ["meta_folder", "meta_train_arms", "policy_path"]


def meta_folder(root: Path, arm: Arm) -> Path:
    return root / "meta" / arm.name


def policy_path(root: Path, arm: Arm) -> Path:
    from ..training.policy_train import FILES

    return meta_folder(root, arm) / FILES["policy"]


def meta_train_arms(study: Study, opts: StudyOptions, root: Path, progress: Progress) -> None:
    """Meta-train every deployed arm not finished before (its ``summary.json`` is written last)."""
    from ..config import TrainConfig
    from ..distributed.policy_episodes import ray_episode_runner
    from ..training.policy_train import FILES, MetaSettings, train_policy
    from .reuse import Donors, check_donors

    size = study.sizes[opts.size]
    for arm in (a for a in study.arms if a.kind == "deployed"):
        folder = meta_folder(root, arm)
        label = f"[{progress.phase}] {arm.name}/meta"
        if (folder / FILES["summary"]).is_file():
            opts.log(f"{label}: finished before, skipped", flush=True)
            continue
        values = {k: v for k, v in study.arm_config(arm, opts.size).items() if k != "val_eps"}
        config = TrainConfig.from_dict({**values, "seed": 0})  # seeds only the initial policy; episodes have their own
        # Episodes are the deployed runs: trained at the arm's eps, their return validated at the study's threat eps.
        settings = MetaSettings(episodes=size.episodes, parallel=size.episode_parallel, val_eps=study.val_eps(opts.size))
        resume = (folder / FILES["state"]).is_file()
        donor = None if resume else Donors(check_donors(opts.reuse)).meta_folder(config, settings)
        if donor is not None:  # the same meta-training finished in a donor study (--reuse): copied, not rerun
            if folder.exists():
                shutil.rmtree(folder)
            shutil.copytree(donor, folder)
            opts.log(f"{label}: reused from {donor}", flush=True)
            continue
        if folder.exists() and not resume:
            shutil.rmtree(folder)  # killed before its first batch was saved: nothing to keep
        opts.log(f"{label}: {'resuming' if resume else 'starting'} {size.episodes} episodes, "
                 f"{size.episode_parallel} side by side", flush=True)
        batches = -(-size.episodes // size.episode_parallel)

        def log(info: dict) -> None:
            opts.log(f"{label}: batch {info['batch'] + 1}/{batches} (episodes {info['episodes'][0]}-{info['episodes'][-1]}), "
                     f"mean return {info['mean_return']:.3f}", flush=True)

        with ray_episode_runner(opts.address, size.episode_parallel) as run_batch:
            train_policy(config, folder, settings, resume=resume, run_batch=run_batch, on_batch=log)
