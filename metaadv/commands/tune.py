"""``metaadv tune``: run a named Ray Tune experiment (PBT, PB2, ASHA + Optuna, ...), or resume one."""

from __future__ import annotations

import argparse
import sys
import time

from ..errors import UserError


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("tune", help="search hyperparameters and schedules with Ray Tune",
                       description="Run a named Ray Tune experiment (see --list) on a local Ray or a cluster.")
    p.add_argument("experiment", nargs="?", metavar="NAME", help="a name from --list, or a .py file defining EXPERIMENT")
    p.add_argument("--list", action="store_true", help="list the experiments and exit")
    p.add_argument("--smoke", action="store_true", help="the small size (minutes on 2 CPUs) instead of the full one")
    p.add_argument("--samples", metavar="N", help="number of trials (the PBT population); default: the size's")
    p.add_argument("--storage", default="tune_results", metavar="PATH_OR_URI",
                   help="where results go: a folder, or a URI (s3://, gs://) shared by all nodes (default ./tune_results)")
    p.add_argument("--address", metavar="ADDR", help="join this Ray cluster ('auto', host:port, ray://...) instead of starting one")
    p.add_argument("--cpus-per-trial", default="1", metavar="X", help="CPUs per trial, fractions allowed (default 1)")
    p.add_argument("--gpus-per-trial", default="0", metavar="Y", help="GPUs per trial, fractions allowed (default 0)")
    add_trial_worker_flags(p)
    p.add_argument("--resume", action="store_true", help="continue the experiment stored under --storage/--name")
    p.add_argument("--name", metavar="RUN_NAME", help="the run's folder name (default NAME, or NAME-smoke)")
    p.add_argument("--quiet", action="store_true", help="no progress table, only the final summary")
    add_loggers_flag(p)
    _one_line_errors(p)
    return p


def _one_line_errors(p: argparse.ArgumentParser) -> None:
    """Bad or unknown options: one line and exit 2, like every other input error (argparse would
    print the usage first, and leave unknown options to the top-level parser)."""

    def error(message: str):
        print(f"metaadv: error: tune: {message}", file=sys.stderr)
        sys.exit(2)

    parse_known = p.parse_known_args

    def parse_known_args(args=None, namespace=None):
        namespace, extras = parse_known(args, namespace)
        if extras:
            error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras

    p.error, p.parse_known_args = error, parse_known_args


def add_loggers_flag(p: argparse.ArgumentParser) -> None:
    """``--loggers tensorboard,mlflow``: Ray Tune's logger callbacks, offline (the loggers extra)."""
    p.add_argument("--loggers", metavar="NAMES", default=None,
                   help="also log every trial with Ray Tune's logger callbacks, offline: tensorboard (event files in "
                        "each trial folder), mlflow (a local MLflow store, mlflow.db), or both comma-separated; "
                        "needs the loggers extra (pip install -e '.[loggers]'); docs/tune.md says how to open them")


def add_trial_worker_flags(p: argparse.ArgumentParser) -> None:
    """``--workers`` for Train-backed trials (metaadv/distributed/tune_trial.py)."""
    g = p.add_argument_group("Train-backed trials: each trial trains with its own Ray Train workers")
    g.add_argument("--workers", default="1", metavar="N", help="data-parallel workers per trial (default 1: the trial trains itself)")
    g.add_argument("--gpus-per-worker", default="0", metavar="G", help="GPUs per worker (default 0)")
    g.add_argument("--cpus-per-worker", default="1", metavar="C", help="CPUs per worker, fractions allowed (default 1)")


def trial_workers(args: argparse.Namespace):
    """The WorkerSpec of Train-backed trials, or None for trials that train in their own process."""
    from ..distributed.workers import WorkerSpec

    spec = WorkerSpec(_number(args.workers, "--workers", int), _number(args.gpus_per_worker, "--gpus-per-worker", float),
                      _number(args.cpus_per_worker, "--cpus-per-worker", float))
    return spec if spec.uses_ray else None


def _number(text: str, flag: str, cast):
    try:
        return cast(text)
    except (TypeError, ValueError):
        raise UserError(f"{flag} expects a number, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    from tune_experiments.registry import list_experiments, load_experiment

    if args.list:
        for name, description in list_experiments():
            print(f"{name:<24} {description}")
        return 0
    if not args.experiment:
        raise UserError("name an experiment (metaadv tune --list shows them)")
    exp = load_experiment(args.experiment)
    from ..tune.loggers import parse_loggers

    if args.loggers is not None and args.resume:
        raise UserError("--loggers applies to a new run; a resumed experiment keeps the loggers it started with")
    loggers = parse_loggers(args.loggers)
    samples = None if args.samples is None else _number(args.samples, "--samples", int)
    workers = trial_workers(args)
    from ..tune.loggers import where_lines
    from ..tune.runner import RunOptions, logger_places, run_experiment  # imports Ray: once the input is known good
    from ..tune.report import summary_lines

    opts = RunOptions(size="smoke" if args.smoke else "full", samples=samples, storage=args.storage,
                      address=args.address, cpus_per_trial=_number(args.cpus_per_trial, "--cpus-per-trial", float),
                      gpus_per_trial=_number(args.gpus_per_trial, "--gpus-per-trial", float),
                      resume=args.resume, name=args.name, verbose=0 if args.quiet else 1, workers=workers,
                      loggers=loggers)
    start = time.perf_counter()
    grid = run_experiment(exp, opts)
    logdir, uri, _ = logger_places(exp, opts)
    print("\n".join([*summary_lines(grid, exp, time.perf_counter() - start), *where_lines(loggers, logdir, uri)]))
    return 0
