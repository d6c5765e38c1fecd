"""How ``metaadv train`` and ``metaadv meta`` turn their flags into a run's config, fresh or resumed."""

from __future__ import annotations

import argparse
import os
from typing import Callable

from ..config import read_config_file

S = argparse.SUPPRESS  # flags not given stay out of the namespace, so a --config file is not overridden by defaults

# Namespace entries that steer the command rather than the run.
NOT_CONFIG = frozenset({"config", "command", "_run", "out", "resume", "quiet", "save_policy"})


def given_values(args: argparse.Namespace) -> dict:
    """What was given explicitly: the ``--config`` file's keys, with the flags given on top."""
    values = read_config_file(args.config) if hasattr(args, "config") else {}
    values.update({k: v for k, v in vars(args).items() if k not in NOT_CONFIG})
    return values


def run_config(args: argparse.Namespace, config_cls, read_checkpoint: Callable[[str], dict]):
    """The config of a fresh run, or, with ``--resume``, the stored config with what was given on top.

    A resumed run's folder loop then refuses anything that differs from the stored run.
    """
    given = given_values(args)
    if not args.resume:
        return config_cls.from_dict(given)
    stored = read_checkpoint(os.path.join(args.out, "checkpoint.pt"))["config"]
    return config_cls.from_dict({**stored, **given})
