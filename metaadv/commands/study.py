"""``metaadv study NAME --size tiny|smoke|medium|full``: run a declared study end to end.

Every arm runs as Ray Tune trials (``--address`` spreads them over a cluster), in dependency
order, then every final model is evaluated (PGD with restarts + AutoAttack, per-example worst
case) into ``eval/ARM/MODEL.json`` and listed in ``models.csv``. ``--resume`` continues a killed
study and skips whatever finished. ``metaadv analyze`` turns the folder into a report.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import UserError
from ._run_config import warn_if_bf16_is_emulated

DESCRIPTION = __doc__.split("\n", 1)[1].strip()


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("study", help="run a declared study (learned vs searched schedules) and evaluate its models",
                       description=DESCRIPTION)
    p.add_argument("study", metavar="NAME", nargs="?", help="a study from --list (tune_experiments/NAME.py)")
    p.add_argument("--list", action="store_true", help="list the studies and exit")
    p.add_argument("--size", default="smoke", help="tiny (tests, < 1 min), smoke (minutes on 2 CPUs), medium (hours), "
                   "full (a GPU cluster); default smoke")
    p.add_argument("--out", metavar="DIR", help="the study folder (default studies/NAME-SIZE)")
    p.add_argument("--storage", metavar="PATH_OR_URI",
                   help="Ray Tune's storage root for the arms (default: inside the study folder); a URI (s3://...) for a cluster")
    p.add_argument("--address", metavar="ADDR", help="join this Ray cluster ('auto', host:port, ray://...) instead of starting one")
    p.add_argument("--cpus-per-trial", type=float, default=None, metavar="X", help="CPUs per trial (default: the size's, 1)")
    p.add_argument("--resume", action="store_true", help="continue the study in --out, skipping what finished")
    p.add_argument("--status", action="store_true", help="print what the study in --out (default studies/NAME-SIZE) has "
                   "done and what is left, per arm (trials trained, models evaluated, of those planned), and exit; "
                   "safe while the study runs")
    p.add_argument("--precision", default="fp32", help="attack and training steps of every arm: fp32 (default) or bf16; "
                   "one precision for the whole study, so 'auto' (which can differ between nodes) is refused")
    p.add_argument("--arms", metavar="A,B,...", help="a pilot: only these arms (and those they derive from), the "
                   "declared contrasts and aim among them; study.json says so")
    p.add_argument("--seeds", type=int, default=None, metavar="N",
                   help="a pilot: N paired seeds instead of the size's (>= 2); study.json says so")
    p.add_argument("--reuse", action="append", default=[], metavar="DIR",
                   help="a finished or partial study folder whose runs this study takes instead of rerunning them, "
                        "where every trial of an arm's experiment has a twin there with the same config and seed "
                        "(copied in; progress.json says reused_from); repeatable")
    p.add_argument("--tune-output", action="store_true", help="also show Ray Tune's own progress tables")
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="keep every round's checkpoint of finished experiments (default: once an experiment is "
                        "finished, each trial keeps only its last checkpoint, all that --resume and the later "
                        "phases read; docs/study.md gives the disk each size needs)")
    from .tune import add_loggers_flag, add_trial_worker_flags

    add_loggers_flag(p)
    add_trial_worker_flags(p)

    def error(message: str):
        print(f"metaadv: error: study: {message}", file=sys.stderr)
        sys.exit(2)

    p.error = error
    return p


def run(args: argparse.Namespace) -> int:
    from tune_experiments.registry import STUDIES, load_study

    if args.list:
        for name in STUDIES:
            study = load_study(name)
            print(f"{name:<24} {study.description} (sizes: {', '.join(study.sizes)})")
        return 0
    if args.status:
        return _status(args)
    if not args.study:
        raise UserError("name a study (metaadv study --list shows them)")
    study = load_study(args.study)
    if args.size not in study.sizes:
        raise UserError(f"unknown size {args.size!r}; choose one of {', '.join(study.sizes)}")
    if args.cpus_per_trial is not None and args.cpus_per_trial <= 0:
        raise UserError("--cpus-per-trial must be > 0")
    if args.precision not in ("fp32", "bf16"):
        raise UserError(f"--precision {args.precision!r}: a study runs all its arms in one precision, fp32 or bf16")
    from ..tune.loggers import parse_loggers
    from .tune import trial_workers

    workers = trial_workers(args)
    loggers = parse_loggers(args.loggers)  # a resumed study's experiments started before keep their loggers
    study = study.replace(base={**study.base, "precision": args.precision})
    arms = [a.strip() for a in args.arms.split(",") if a.strip()] if args.arms else None
    study = study.pilot(args.size, seeds=args.seeds, arms=arms)
    warn_if_bf16_is_emulated(args.precision, study.sizes[args.size].config.get("device", study.base.get("device", "auto")))
    from ..study.reuse import check_donors

    donors = tuple(str(d) for d in check_donors(args.reuse))
    from ..study import StudyOptions, run_study  # imports Ray: only once the input is known good

    run_study(study, StudyOptions(size=args.size, out=args.out, storage=args.storage, address=args.address,
                                  resume=args.resume, cpus_per_trial=args.cpus_per_trial,
                                  verbose=1 if args.tune_output else 0, workers=workers,
                                  keep_checkpoints=args.keep_checkpoints, loggers=loggers, reuse=donors))
    return 0


def _status(args: argparse.Namespace) -> int:
    """``--status``: read the study folder only (no Ray), so it can run beside the study."""
    import json
    from pathlib import Path

    if not args.study and not args.out:
        raise UserError("--status needs the study's folder: --out DIR (or NAME and --size for studies/NAME-SIZE)")
    folder = Path(args.out or Path("studies") / f"{args.study}-{args.size}").expanduser()
    if not (folder / "study.json").is_file():
        raise UserError(f"no study in {str(folder)!r} (no study.json); give the folder the study writes to with --out")
    name = json.loads((folder / "study.json").read_text()).get("study")
    if args.study and name != args.study:
        raise UserError(f"{str(folder)!r} holds study {name!r}, not {args.study!r}")
    from analysis.status import status_lines

    print("\n".join(status_lines(folder)))
    return 0
