"""Re-measure the docs/meta-learning.md table: five methods on mnist5k-rot at equal budget, 3 seeds, eps sweep.

    OMP_NUM_THREADS=1 python benchmarks/meta_learning_table.py --size full --out runs/meta_table --jobs 2
    OMP_NUM_THREADS=1 python benchmarks/meta_learning_table.py --size medium --out runs/meta_table_medium --jobs 2
    OMP_NUM_THREADS=1 python benchmarks/meta_learning_table.py --size smoke --out /tmp/meta_table_smoke

MAML, first-order MAML, Reptile, ADML, Adversarial Querying (AQ) and ADML trained with AQ's PGD
(``adml_pgd``, a control), 3-way and 5-way 1-shot, each
meta-trained with 3 seeds to the same ``cost/grad_evals`` budget (``--budget-grad-evals``: a run
stops mid-round when it is spent), then meta-tested with ``metaadv meta-evaluate`` on the same
seeded tasks (600 at full size):

1. ``train``: ``metaadv meta`` per (ways, method, seed) into ``OUT/runs/``.
2. ``test``: per checkpoint, the eps sweep (PGD with restarts against the adapted model, clean
   support) with AutoAttack's few-shot set (APGD-CE, APGD-DLR, APGD-T) at ``aa_eps`` on the first
   ``aa_tasks`` tasks; then the support attacked through the inner loop (``--support-attack
   unrolled``) at ``aa_eps``. Per-task CSVs and JSON summaries into ``OUT/tests/``.
3. ``report``: ``OUT/report.md`` (tables, paired differences, where robust accuracy meets chance),
   ``OUT/per_task.csv`` and ``OUT/comparisons.csv``, with :mod:`analysis.fewshot`.

Every piece is skipped when its output exists, so an interrupted run continues where it stopped
(``--stage`` runs one stage only), and a finished table grows: ``--seeds 0 1 2 3 4 --arms aq adml``
adds two seeds to two arms. Pieces run ``--jobs`` at a time, one process each.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# arm -> (``metaadv meta --method``, its settings beside the shared ones). fomaml: the old table's
# first-order MAML failed at inner lr 0.1 (near chance) and learned at 0.03. ADML: FGSM as Yin et
# al.; AQ: PGD-7 queries as Goldblum et al. Both train at the threat eps 0.2. adml_pgd is the
# control that separates AQ's outer objective from its stronger attack: ADML trained with AQ's PGD-7.
PGD7 = ["--attack", "pgd", "--attack-steps", "7", "--step-ratio", "0.25"]
ARMS = {"maml": ("maml", []), "fomaml": ("fomaml", ["--inner-lr", "0.03"]), "reptile": ("reptile", []),
        "adml": ("adml", ["--attack", "fgsm"]), "aq": ("aq", PGD7), "adml_pgd": ("adml", PGD7)}
METHODS = tuple(ARMS)
SHARED = ["--dataset", "mnist5k-rot", "--shots", "1", "--queries", "5", "--meta-batch", "4", "--inner-steps", "3",
          "--meta-lr", "0.001", "--eps", "0.2", "--device", "cpu", "--quiet"]


@dataclass(frozen=True)
class Plan:
    ways: tuple[int, ...]
    seeds: tuple[int, ...]
    budget: dict  # ways -> cost/grad_evals of meta-training
    steps_per_round: int
    val_tasks: int
    tasks: int  # meta-test tasks (the same for every checkpoint)
    eps: tuple[float, ...]
    pgd_steps: int
    restarts: int
    aa_eps: float
    aa_tasks: int
    support_tasks: int  # tasks of the unrolled support attack


SIZES = {
    # Proves the pipeline end to end in minutes; its numbers mean nothing.
    "smoke": Plan(ways=(3, 5), seeds=(0, 1, 2), budget={3: 3000, 5: 5000}, steps_per_round=5, val_tasks=2, tasks=12,
                  eps=(0.05, 0.1, 0.2, 0.3), pgd_steps=3, restarts=2, aa_eps=0.1, aa_tasks=3, support_tasks=6),
    # About 2.5 hours of a 2-core CPU with --jobs 2 (measured, six arms): half of full's budget (AQ, the dearest
    # per step, still gets about as many outer steps as the stale table's MAML), a quarter of its
    # validation, 100 shared test tasks (AutoAttack on all of them), the unrolled support attack
    # on the first 50.
    "medium": Plan(ways=(3, 5), seeds=(0, 1, 2), budget={3: 75_000, 5: 125_000}, steps_per_round=50, val_tasks=10,
                   tasks=100, eps=(0.05, 0.1, 0.2, 0.3), pgd_steps=20, restarts=3, aa_eps=0.1, aa_tasks=100,
                   support_tasks=50),
    "full": Plan(ways=(3, 5), seeds=(0, 1, 2), budget={3: 150_000, 5: 250_000}, steps_per_round=25, val_tasks=20,
                 tasks=600, eps=(0.05, 0.1, 0.2, 0.3), pgd_steps=20, restarts=3, aa_eps=0.1, aa_tasks=100,
                 support_tasks=600),
}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "metaadv.cli", *args]


def _run(cmd: list[str], log: Path, stdout: Path | None = None) -> None:
    """Run one piece; its stdout goes to ``stdout`` (written whole, after success), stderr to ``log``."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.setdefault("OMP_NUM_THREADS", "1")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as err:
        err.write(" ".join(cmd) + "\n")
        err.flush()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"failed (exit {proc.returncode}), see {log}: {' '.join(cmd)}")
    if stdout is not None:
        tmp = stdout.with_suffix(".tmp")
        tmp.write_text(proc.stdout)
        tmp.replace(stdout)


def _run_dir(out: Path, ways: int, method: str, seed: int) -> Path:
    return out / "runs" / f"{ways}way" / method / f"seed{seed}"


def _spent(run: Path) -> int:
    """The run's cost/grad_evals so far, from the last row of its metrics.csv (0 if none)."""
    import csv

    try:
        with open(run / "metrics.csv") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        return 0
    return int(float(rows[-1]["cost/grad_evals"])) if rows else 0


def train_pieces(plan: Plan, out: Path, arms=METHODS) -> list:
    pieces = []
    for ways in plan.ways:
        for method in arms:
            for seed in plan.seeds:
                run = _run_dir(out, ways, method, seed)
                # rounds only caps: the budget ends every run
                algorithm, flags = ARMS[method]
                cmd = _cli("meta", "--out", str(run), "--method", algorithm, "--ways", str(ways), "--seed", str(seed),
                           "--budget-grad-evals", str(plan.budget[ways]), "--rounds", "100000",
                           "--steps-per-round", str(plan.steps_per_round), "--val-tasks", str(plan.val_tasks),
                           *SHARED, *flags)
                if _spent(run) >= plan.budget[ways]:
                    continue  # finished
                if (run / "checkpoint.pt").exists():
                    cmd.append("--resume")  # continues an interrupted run
                pieces.append((cmd, out / "logs" / f"train_{ways}way_{method}_s{seed}.log", None))
    return pieces


def test_pieces(plan: Plan, out: Path, arms=METHODS) -> list:
    """The meta-tests still to run: every eps sweep (the headline numbers) before any unrolled attack."""
    (out / "tests").mkdir(parents=True, exist_ok=True)
    sweeps, unrolled_pieces = [], []
    for ways in plan.ways:
        for method in arms:
            for seed in plan.seeds:
                run, name = _run_dir(out, ways, method, seed), f"{ways}way_{method}_s{seed}"
                common = ["meta-evaluate", str(run), "--pgd-steps", str(plan.pgd_steps), "--pgd-restarts",
                          str(plan.restarts), "--label", method, "--device", "cpu", "--json"]
                sweep = out / "tests" / f"sweep_{name}.json"
                if not sweep.exists():
                    cmd = _cli(*common, "--tasks", str(plan.tasks), "--eps", *map(str, plan.eps), "--autoattack-eps",
                               str(plan.aa_eps), "--aa-tasks", str(plan.aa_tasks), "--per-task",
                               str(sweep.with_suffix(".csv")))
                    sweeps.append((cmd, out / "logs" / f"sweep_{name}.log", sweep))
                unrolled = out / "tests" / f"unrolled_{name}.json"
                if not unrolled.exists():
                    cmd = _cli(*common, "--tasks", str(plan.support_tasks), "--eps", str(plan.aa_eps),
                               "--support-attack", "unrolled", "--per-task", str(unrolled.with_suffix(".csv")))
                    unrolled_pieces.append((cmd, out / "logs" / f"unrolled_{name}.log", unrolled))
    return sweeps + unrolled_pieces


def run_pieces(pieces: list, jobs: int) -> None:
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for i, _ in enumerate(pool.map(lambda p: _run(*p), pieces), 1):
            print(f"  {i}/{len(pieces)} done ({time.perf_counter() - start:.0f}s)", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=tuple(SIZES), default="full")
    p.add_argument("--out", required=True, help="folder for runs, meta-tests, logs and the report")
    p.add_argument("--jobs", type=int, default=1, help="pieces run at a time (one process each)")
    p.add_argument("--stage", choices=("all", "train", "test", "report"), default="all")
    p.add_argument("--seeds", type=int, nargs="+", default=None, metavar="S",
                   help="training seeds (default: the size's 0 1 2); the report's cells say which arms have fewer")
    p.add_argument("--arms", nargs="+", choices=METHODS, default=list(METHODS), metavar="ARM",
                   help=f"arms to train and meta-test (default all: {' '.join(METHODS)}); the report covers every arm")
    args = p.parse_args(argv)
    plan, out = SIZES[args.size], Path(args.out)
    if args.seeds is not None:
        plan = dataclasses.replace(plan, seeds=tuple(sorted(set(args.seeds))))
    arms = tuple(args.arms)
    out.mkdir(parents=True, exist_ok=True)
    (out / "plan.json").write_text(json.dumps({"size": args.size, **plan.__dict__, "arms": arms}, indent=2,
                                              default=str) + "\n")
    if args.stage in ("all", "train"):
        pieces = train_pieces(plan, out, arms)
        print(f"train: {len(pieces)} runs to run or finish", flush=True)
        run_pieces(pieces, args.jobs)
    if args.stage in ("all", "test"):
        pieces = test_pieces(plan, out, arms)
        print(f"test: {len(pieces)} meta-tests to run", flush=True)
        run_pieces(pieces, args.jobs)
    if args.stage in ("all", "report"):
        from meta_learning_report import write_report

        write_report(plan, args.size, out, METHODS)
        print(f"report: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
