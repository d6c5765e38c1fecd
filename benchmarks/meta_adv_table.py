"""Issue 11's equal-cost table: generator methods against fixed-schedule PGD-AT on mnist5k, eps 0.3.

Every row trains with the same budget of classifier passes (``--budget-grad-evals``, default
192,500 = five epochs of PGD-10 AT on mnist5k's 3,500 training digits), the same rounds of 3
steps of 100, the same per-round check (PGD-5 on 100 validation digits) and the same selection
rule (``--co-guard``: on a collapse of that check, back to the best round, and stop), for each
seed; then ``metaadv evaluate`` judges every model with FGSM, PGD-40 x 5 restarts and the reference
AutoAttack (pyautoattack, ``standard``) on the first 500 test digits, robust accuracy being the
per-example worst case; generator runs also report their own generator as a transfer attack
(never part of the verdict). The table goes to ``OUT/table.md`` (mean +- standard deviation over
seeds, then the values), next to each run's folder and ``eval.json``.

Rows (``--rows``, default all but ``pgd-policy``):

- ``pgd-fixed``: PGD-10 AT, fixed schedule;
- ``recursive``: meta-generator, recursive generator K = 3, no final step;
- ``recursive-final``: the same plus one signed-gradient step (the default meta-generator);
- ``meta-adv``: the recursive generator + final step, driven by the REINFORCE policy;
- ``advgan``: AdvGAN as a defence (G(x) alone, final step on, as for every generator method);
- ``noise``: the control, the generator replaced by a uniform point of the ball, then the final
  step, at the same budget of classifier passes (so it trains for more rounds: it is cheaper);
- ``pgd-policy``: PGD-AT driven by the policy (the old table's second row);
- ``pgd4-fixed``: PGD-4 AT with steps of 0.5 eps, the hand-made attack at the recursive generator +
  final step's own price (5 classifier passes per example, so the same rounds, and the same step
  size): what learning the steps adds over signed-gradient ones.

Fixed schedules ramp eps over the first 30% of the rounds the budget buys (the rounds follow from
each row's classifier passes per example, :func:`passes_per_example`); the policy picks eps itself.
The budget counts training passes (``cost/grad_evals``); the policy rows' reward check
(``cost/reward_grad_evals``, a decision cost) comes on top and has its own column.

    python benchmarks/meta_adv_table.py --out runs/table11 --jobs 2          # the real table, 5 seeds
    python benchmarks/meta_adv_table.py --out /tmp/t --size tiny --seeds 0   # minutes: proves the pipeline

Finished runs (an ``eval.json``) are skipped and interrupted ones resumed, so the command can be
re-run until the table is complete.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROWS = {
    "pgd-fixed": ("PGD-AT (PGD-10), fixed schedule", ["--method", "pgd-at", "--steps", "10"]),
    "recursive": ("recursive generator (K = 3)", ["--method", "meta-generator", "--gen-arch", "recursive", "--gen-unroll", "3",
                                                  "--no-gen-final-step"]),
    "recursive-final": ("recursive generator + final step", ["--method", "meta-generator", "--gen-arch", "recursive",
                                                             "--gen-unroll", "3", "--gen-final-steps", "1"]),
    "meta-adv": ("meta-adv (recursive + final step, policy)", ["--method", "meta-adv", "--gen-arch", "recursive",
                                                               "--gen-unroll", "3", "--gen-final-steps", "1"]),
    "advgan": ("AdvGAN (G(x)) + final step", ["--method", "advgan"]),
    "noise": ("control: uniform noise + final step", ["--method", "meta-generator", "--gen-arch", "noise", "--gen-final-steps", "1"]),
    "pgd-policy": ("PGD-AT, driven by the policy", ["--method", "pgd-at", "--steps", "10", "--controller", "policy"]),
    "pgd4-fixed": ("PGD-AT (PGD-4, steps of 0.5 eps), fixed schedule", ["--method", "pgd-at", "--steps", "4",
                                                                         "--step-ratio", "0.5"]),
}
DEFAULT_ROWS = [name for name in ROWS if name != "pgd-policy"]
GENERATOR_ROWS = {"recursive", "recursive-final", "meta-adv", "advgan"}  # with a generator to report as a transfer attack
SIZES = {  # budget, evaluation digits and attack strength
    "full": {"budget": 192_500, "n": 500, "eval": ["--pgd-steps", "40", "--pgd-restarts", "5"], "aa": "standard"},
    "tiny": {"budget": 3_000, "n": 20, "eval": ["--pgd-steps", "10", "--pgd-restarts", "1", "--no-checks"], "aa": "fast"},
}
STEPS_PER_ROUND, BATCH = 3, 100


def passes_per_example(name: str) -> int:
    """Classifier passes per trained example of a row at its defaults (metaadv/training/generator_unroll.py)."""
    return {"pgd-fixed": 11, "pgd-policy": 11, "pgd4-fixed": 5,
            "recursive": 1 + 2 + 1 + 1,  # first read, K - 1 reads, the last step's loss term, the update
            "recursive-final": 1 + 2 + 1 + 0 + 1,  # the first final step reuses that loss term's gradient
            "meta-adv": 1 + 2 + 1 + 0 + 1,
            "advgan": 1 + 0 + 1,  # one generator step (x alone), the free final step, the update
            "noise": 1 + 1}[name]  # the final step's read, the update


def train_args(name: str, seed: int, budget: int) -> list[str]:
    rounds_bought = math.ceil(budget / (passes_per_example(name) * STEPS_PER_ROUND * BATCH))
    args = [*ROWS[name][1], "--dataset", "mnist5k", "--eps", "0.3", "--device", "cpu", "--steps-per-round",
            str(STEPS_PER_ROUND), "--batch-size", str(BATCH), "--val-size", "100", "--val-pgd-steps", "5", "--epochs", "100000",
            "--budget-grad-evals", str(budget), "--lr-schedule", "constant", "--co-guard", "--seed", str(seed)]
    if name not in ("meta-adv", "pgd-policy"):  # the policy picks eps itself
        args += ["--eps-ramp-rounds", str(max(1, round(0.3 * rounds_bought)))]
    return args


def run_one(name: str, seed: int, out: Path, size: dict, python: str, aa_version: str) -> Path:
    folder = out / f"{name}-s{seed}"
    report = folder / "eval.json"
    if report.is_file():
        return report
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    train = [python, "-m", "metaadv.cli", "train", "--out", str(folder), "--quiet", *train_args(name, seed, size["budget"])]
    if (folder / "checkpoint.pt").is_file():
        train.append("--resume")  # a finished run resumes to nothing: it is already at its budget
    subprocess.run(train, check=True, env=env)
    evaluate = [python, "-m", "metaadv.cli", "evaluate", str(folder), "--n", str(size["n"]), *size["eval"],
                "--aa-version", aa_version or size["aa"], "--device", "cpu", "--json", "--out", str(report)]
    if name in GENERATOR_ROWS:
        evaluate += ["--transfer", str(folder)]
    done = subprocess.run(evaluate, env=env, stdout=subprocess.DEVNULL)
    if done.returncode not in (0, 3):  # 3: an untrusted verdict, still a report (its reasons are in eval.json)
        raise RuntimeError(f"evaluate failed for {folder} (exit {done.returncode})")
    return report


def last_row(folder: Path) -> dict:
    import csv

    with open(folder / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return rows[-1]


def cell(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    v = [scale * x for x in values]
    spread = f" ± {statistics.stdev(v):.{digits}f}" if len(v) > 1 else ""
    return f"**{statistics.mean(v):.{digits}f}**{spread} ({' / '.join(f'{x:.{digits}f}' for x in v)})"


def complete_seeds(out: Path, names: list[str], seeds: list[int]) -> list[int]:
    """The seeds every row has an evaluation for: a table over them pairs every row with every other."""
    return [s for s in seeds if all((out / f"{name}-s{s}" / "eval.json").is_file() for name in names)]


def paired(values: list[float], base: list[float]) -> str:
    """Mean paired difference (same seed) in points with its 95% t interval; '-' under 2 pairs."""
    d = [100.0 * (a - b) for a, b in zip(values, base)]
    if len(d) < 2:
        return "-"
    from scipy import stats

    half = stats.t.ppf(0.975, len(d) - 1) * statistics.stdev(d) / math.sqrt(len(d))
    return f"{statistics.mean(d):+.1f} [{statistics.mean(d) - half:+.1f}, {statistics.mean(d) + half:+.1f}]"


def table(out: Path, names: list[str], seeds: list[int], base: str = "pgd-fixed") -> str:
    head = ("| method | cost/grad_evals | + reward check | rounds | wall s | clean % | FGSM % | PGD % | AutoAttack % "
            f"| robust (worst case) % | robust − {base} (paired, 95% CI) | own generator (transfer) % |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    robust = {name: [json.loads((out / f"{name}-s{s}" / "eval.json").read_text())["robust_acc"] for s in seeds]
              for name in names}
    for name in names:
        evals = [json.loads((out / f"{name}-s{s}" / "eval.json").read_text()) for s in seeds]
        rows = [last_row(out / f"{name}-s{s}") for s in seeds]
        per = lambda key: [e["per_attack"].get(key, float("nan")) for e in evals]  # noqa: E731
        transfer = [next(iter(e.get("transfer", {}).values()), None) for e in evals]
        lines.append(" | ".join([
            f"| {ROWS[name][0]}", " / ".join(f"{int(float(r['cost/grad_evals'])):,}" for r in rows),
            " / ".join(f"{int(float(r['cost/reward_grad_evals'])):,}" for r in rows),
            " / ".join(r["round"] for r in rows), " / ".join(f"{float(r['cost/seconds']):.0f}" for r in rows),
            cell([e["clean_acc"] for e in evals]), cell(per("fgsm")), cell(per("pgd")), cell(per("autoattack")),
            cell(robust[name]), paired(robust[name], robust[base]) if base in robust and name != base else "-",
            cell(transfer) if None not in transfer else "-"]) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder of the runs and the table")
    p.add_argument("--rows", nargs="+", default=DEFAULT_ROWS, choices=list(ROWS), help="rows to run (default: all but pgd-policy)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--size", choices=list(SIZES), default="full", help="full (the table) or tiny (a smoke run of minutes)")
    p.add_argument("--jobs", type=int, default=1, help="runs at once, one thread each (default 1)")
    p.add_argument("--aa-version", choices=("standard", "fast"), default=None,
                   help="AutoAttack version of the evaluation (default: standard at full size, fast at tiny)")
    p.add_argument("--table-only", action="store_true", help="write the table of the seeds finished so far and stop")
    p.add_argument("--dry-run", action="store_true", help="print the train commands and stop")
    args = p.parse_args(argv)
    out, size = Path(args.out), SIZES[args.size]
    if args.dry_run:
        for name in args.rows:
            for seed in args.seeds:
                print("metaadv train --out", out / f"{name}-s{seed}", " ".join(train_args(name, seed, size["budget"])))
        return 0
    out.mkdir(parents=True, exist_ok=True)
    # Seed-major: an interrupted table still has whole seeds, every row paired with every other.
    jobs = [(name, seed) for seed in args.seeds for name in args.rows]
    if not args.table_only:
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            for report in pool.map(lambda job: run_one(*job, out, size, sys.executable, args.aa_version), jobs):
                print(f"done: {report}", flush=True)
    seeds = complete_seeds(out, args.rows, args.seeds)
    if not seeds:
        print(f"no seed has an evaluation for every row yet under {out}", file=sys.stderr)
        return 1
    text = table(out, args.rows, seeds)
    (out / "table.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
