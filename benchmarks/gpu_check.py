"""The GPU check (issue 25): one command, on a bare accelerator machine, in under 4 minutes.

    python3 benchmarks/gpu_check.py [--device cuda] [--out DIR] [--carry .gpu-carry/py312]

Parts, in this order, each written to the output folder (``--out``, else ``$OUT``, else
/tmp/metaadv-gpu-check) as soon as it has finished:

(a) ``a_throughput.txt``: images/s of PGD-10 AT on PreActResNet-18 (CIFAR-10 shapes, synthetic,
    channels_last), bf16 autocast and fp32 (TF32 on, said in its header), metaadv's trainer
    against a bare hand-written PGD-10 loop in the same process (benchmarks/bench_distributed.py).
(b) ``b_train.txt``: a Ray Train smoke, ``metaadv train --workers 1 --gpus-per-worker 1`` on
    digits (it must train on the worker's GPU), then ``metaadv evaluate --attacks fgsm,pgd`` of
    its checkpoint.
(c) ``c_pbt.txt``: one short PBT experiment (benchmarks/gpu_check_pbt.py), two trials sharing the
    GPU (0.5 each); both must finish and at least one exploit must be logged.

``summary.txt`` gets one line per part as it ends, then the verdict. The exit status is 0 only
when every part is ``ok``; a part that is skipped, blocked or failed makes it 1.

Nothing the bare machine lacks is needed: torch, numpy and scikit-learn (digits) are on its image;
metaadv comes with the working tree (``PYTHONPATH``; no mlxtend, no optuna on these paths); Ray
comes from the folder benchmarks/prepare_gpu_carry.py builds here (``.gpu-carry/py312``: Ray and
what the image lacks, packed): where ``import ray`` fails, it is unpacked into a temporary site
folder and Ray is imported from there only. If that folder could not be built within the
carry limit, (b) and (c) are reported blocked with its measured sizes, and (a) still runs.

``--device cpu`` runs the same parts on the CPU at the smallest sizes (plumbing only: (b) then
uses two CPU workers, since one worker without a GPU is the plain loop without Ray).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from prepare_gpu_carry import size_line  # noqa: E402

OK, FAILED, SKIPPED, BLOCKED = "ok", "FAILED", "SKIPPED", "BLOCKED"
PARTS = {"a": "(a) PGD-10 AT throughput", "b": "(b) Ray Train smoke + evaluate", "c": "(c) PBT, 2 trials sharing the device"}
# Each part's share of the time budget, reserved for it while the earlier parts run.
SHARES = {"a": 0.40, "b": 0.25, "c": 0.35}
PBT_ROUNDS = 4  # benchmarks/gpu_check_pbt.py's ROUNDS


@dataclass(frozen=True)
class PartResult:
    part: str
    status: str
    detail: str

    def line(self) -> str:
        return f"{PARTS[self.part]}: {self.status}" + (f": {self.detail}" if self.detail else "")


def exit_code(results: list[PartResult]) -> int:
    """0 when every part ran and is ok; 1 when any part is missing, skipped, blocked or failed."""
    done = {r.part: r.status for r in results}
    return 0 if all(done.get(p) == OK for p in PARTS) else 1


def part_timeout(remaining: float, later: list[str], budget: float, floor: float = 10.0) -> float:
    """Seconds a part may take: what is left of the budget minus the shares reserved for the parts after it."""
    return max(floor, remaining - sum(SHARES[p] for p in later) * budget)


# -- Ray: installed, or carried ----------------------------------------------------------------


@dataclass
class RaySource:
    ok: bool
    detail: str  # where Ray comes from, or why it cannot
    site: str | None = None  # the temporary site folder holding the carried packages
    blocked: bool = False  # True: it could not be carried (sizes); False with ok False: it broke


def _python_tag() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def find_ray(carry: Path, env: dict, scratch: Path) -> RaySource:
    """Ray from this Python if ``import ray`` works, else from the carried folder, unpacked."""
    probe = subprocess.run([sys.executable, "-c", "import ray; print(ray.__version__, ray.__file__)"], env=env,
                           capture_output=True, text=True)
    if probe.returncode == 0:
        return RaySource(True, f"installed here: ray {probe.stdout.strip()}")
    return carried_ray(carry, env, scratch)


def carried_ray(carry: Path, env: dict, scratch: Path) -> RaySource:
    """The carried packages unpacked into ``scratch/site``, checked to give Ray from there only."""
    manifest_path = carry / "manifest.json"
    if not manifest_path.is_file():
        return RaySource(False, f"`import ray` fails here and {carry} holds no carried Ray: build it with "
                                f"benchmarks/prepare_gpu_carry.py --python-version {_python_tag()} and carry that folder",
                         blocked=True)
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("python") != _python_tag():
        return RaySource(False, f"{carry} was built for Python {manifest.get('python')}, this is {_python_tag()}", blocked=True)
    archive = carry / "site.tar.xz"
    if not manifest.get("fits") or not archive.is_file():
        return RaySource(False, f"Ray and its needs do not fit the carry limit: {size_line(manifest)}", blocked=True)
    site = scratch / "site"
    start = time.perf_counter()
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(site, filter="data")
        else:
            tar.extractall(site)
    unpack_s = time.perf_counter() - start
    check = ("import ray, ray.tune, ray.train.torch, sys; "
             "print(ray.__version__, ray.__file__); sys.exit(0 if ray.__file__.startswith(sys.argv[1]) else 3)")
    probe = subprocess.run([sys.executable, "-c", check, str(site)], env=with_site(env, str(site)),
                           capture_output=True, text=True)
    if probe.returncode != 0:
        why = (probe.stderr.strip().splitlines() or ["ray imported from outside the carried folder: " + probe.stdout.strip()])[-1]
        return RaySource(False, f"the carried Ray does not import: {why}")
    return RaySource(True, f"carried: ray {probe.stdout.strip()} (unpacked in {unpack_s:.1f} s; {size_line(manifest)})",
                     site=str(site))


def with_site(env: dict, site: str | None) -> dict:
    if not site:
        return env
    return {**env, "PYTHONPATH": os.pathsep.join([site, *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))])}


# -- running a part's commands -----------------------------------------------------------------


def run_logged(cmd: list[str], log, timeout: float, env: dict) -> tuple[int, str]:
    """Run ``cmd``, copying its output line by line to ``log`` and to stdout; (exit status, output).

    It runs in its own process group, ended whole afterwards (a local Ray its driver started dies
    with it); 124 on a timeout.
    """
    log.write(f"$ {' '.join(cmd)}\n")
    log.flush()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO,
                            start_new_session=True, bufsize=1)
    lines: list[str] = []

    def pump():
        for line in proc.stdout:
            lines.append(line)
            log.write(line)
            log.flush()
            sys.stdout.write(line)
            sys.stdout.flush()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        rc = proc.wait(timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired:
        rc = 124
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
    reader.join(timeout=5)
    if rc == 124:
        log.write(f"[timed out after {timeout:.0f} s]\n")
        log.flush()
    return rc, "".join(lines)


# -- the parts ---------------------------------------------------------------------------------


def part_a(args, env, log, timeout) -> PartResult:
    # Estimated, not measured (no GPU yet): a PGD-10 step of batch 256 on an H100 is about 0.1 s in
    # bf16, twice that in fp32, so 4 arms x 4 rounds of 10 steps stay inside (a)'s share of 4 minutes.
    sizes = ["--batch-size", "256", "--steps", "10", "--rounds", "3"] if args.device == "cuda" else \
        ["--batch-size", "2", "--steps", "1", "--rounds", "1", "--warmup", "0"]
    cmd = [sys.executable, "benchmarks/bench_distributed.py", "--gpu", "--device", args.device,
           "--precisions", "bf16,fp32", "--tf32", "on", *sizes]
    rc, out = run_logged(cmd, log, timeout, env)
    ratios = [line.strip() for line in out.splitlines() if "metaadv / bare:" in line]
    if rc != 0 or len(ratios) != 2:
        return PartResult("a", FAILED, f"exit {rc}" + (", timed out" if rc == 124 else "") + f"; {len(ratios)} of 2 precisions measured")
    return PartResult("a", OK, throughput_summary(out))


def throughput_summary(out: str) -> str:
    """'bf16: bare 1234.5, metaadv 1200.1 images/s, metaadv / bare 0.972 ok; fp32: ...' from bench_distributed's lines."""
    tf32 = next((part.strip() for line in out.splitlines() if "TF32" in line for part in line.split(";") if "TF32" in part), "")
    rows = []
    for precision in ("bf16", "fp32"):
        rate = {kind: line.split()[-1] for line in out.splitlines() for kind, key in (("bare", "bare hand-written"), ("metaadv", "metaadv trainer"))
                if line.startswith(f"{precision}: {key}")}
        ratio = next((line.split("metaadv / bare:")[1].split("(")[0].strip() + " " + line.split(")")[-1].strip()
                      for line in out.splitlines() if line.startswith(f"{precision}: metaadv / bare:")), "?")
        rows.append(f"{precision}: bare {rate.get('bare', '?')}, metaadv {rate.get('metaadv', '?')} images/s, metaadv / bare {ratio}")
    return "; ".join(rows) + (f" ({tf32})" if tf32 else "")


def part_b(args, env, log, deadline, work: Path) -> PartResult:
    out = work / "smoke"
    workers = ["--workers", "1", "--gpus-per-worker", "1"] if args.device == "cuda" else \
        ["--workers", "2", "--cpus-per-worker", "0.5"]
    cmd = [sys.executable, "-m", "metaadv.cli", "train", "--out", str(out), "--dataset", "digits", "--rounds", "2",
           "--steps-per-round", "20", "--val-size", "100", "--val-pgd-steps", "5", *workers]
    rc, text = run_logged(cmd, log, deadline - time.monotonic(), env)
    world = "1" if args.device == "cuda" else "2"
    where = f"worker 0 of {world} trains on {args.device}"
    if rc != 0:
        return PartResult("b", FAILED, f"metaadv train exited {rc}" + (" (timed out)" if rc == 124 else ""))
    if where not in text:
        return PartResult("b", FAILED, f"metaadv train never said {where!r}")
    cmd = [sys.executable, "-m", "metaadv.cli", "evaluate", str(out), "--n", "100", "--attacks", "fgsm,pgd",
           "--pgd-steps", "10", "--pgd-restarts", "1", "--device", args.device, "--no-progress"]
    rc, text = run_logged(cmd, log, deadline - time.monotonic(), env)
    robust = next((line.split()[1] for line in text.splitlines() if line.startswith("robust")), "?")
    clean = next((line.split()[1] for line in text.splitlines() if line.startswith("clean")), "?")
    if rc not in (0, 3):
        return PartResult("b", FAILED, f"{where}; metaadv evaluate exited {rc}" + (" (timed out)" if rc == 124 else ""))
    verdict = "trusted" if rc == 0 else "UNTRUSTED (a gradient-masking check failed: see b_train.txt)"
    return PartResult("b", OK if rc == 0 else FAILED, f"{where}; evaluate fgsm,pgd on 100 digits: clean {clean}, "
                                                      f"robust {robust}, verdict {verdict}")


def pbt_facts(folder: Path) -> dict:
    """What the PBT run left: trials, each one's last round and time span, exploits logged."""
    trials = {}
    for result in sorted(folder.glob("*/result.json")):
        rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        if rows:
            stamps = [r.get("timestamp", 0) for r in rows]
            trials[result.parent.name] = {"last_round": rows[-1].get("round"), "start": min(stamps), "end": max(stamps)}
    lineage = folder / "pbt_global.txt"
    exploits = len([line for line in lineage.read_text().splitlines() if line.strip()]) if lineage.is_file() else 0
    spans = sorted((t["start"], t["end"]) for t in trials.values())
    overlap = len(spans) >= 2 and spans[1][0] <= spans[0][1]
    return {"trials": trials, "exploits": exploits, "overlap": overlap}


def pbt_verdict(facts: dict, rounds: int = PBT_ROUNDS) -> tuple[str, str]:
    trials = facts["trials"]
    detail = (f"{len(trials)} trials, last rounds {sorted(t['last_round'] for t in trials.values())}, "
              f"{facts['exploits']} exploit(s), ran at the same time: {'yes' if facts['overlap'] else 'no'}")
    good = len(trials) == 2 and all(t["last_round"] == rounds for t in trials.values()) and facts["exploits"] >= 1
    return (OK if good else FAILED), detail


def part_c(args, env, log, deadline, work: Path) -> PartResult:
    share = ["--gpus-per-trial", "0.5", "--cpus-per-trial", "1"] if args.device == "cuda" else \
        ["--gpus-per-trial", "0", "--cpus-per-trial", "0.5"]
    storage = work / "tune"
    cmd = [sys.executable, "-m", "metaadv.cli", "tune", "benchmarks/gpu_check_pbt.py", "--smoke", "--samples", "2",
           "--storage", str(storage), "--name", "pbt", "--quiet", *share]
    rc, _ = run_logged(cmd, log, deadline - time.monotonic(), {**env, "METAADV_GPU_CHECK_DEVICE": args.device})
    facts = pbt_facts(storage / "pbt")
    status, detail = pbt_verdict(facts)
    if rc != 0:
        return PartResult("c", FAILED, f"metaadv tune exited {rc}" + (" (timed out)" if rc == 124 else "") + f"; {detail}")
    return PartResult("c", status, detail)


# -- the command -------------------------------------------------------------------------------


def describe_machine(env: dict) -> list[str]:
    code = ("import torch, platform; print('python', platform.python_version(), '| torch', torch.__version__, 'CUDA',"
            " torch.version.cuda, '| GPU', torch.cuda.get_device_name() if torch.cuda.is_available() else 'none');"
            "\ntry:\n import sklearn; print('scikit-learn', sklearn.__version__)\nexcept ImportError:\n print('scikit-learn MISSING')")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    lines = (out.stdout + out.stderr).strip().splitlines()
    smi = shutil.which("nvidia-smi")
    if smi:
        q = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                           capture_output=True, text=True)
        lines.append("nvidia-smi: " + (q.stdout.strip() or q.stderr.strip()))
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="cuda (default), or cpu: plumbing only")
    p.add_argument("--out", default=os.environ.get("OUT") or "/tmp/metaadv-gpu-check", help="where the results go (default $OUT)")
    p.add_argument("--carry", default=None, help="the carried Ray folder (default .gpu-carry/pyXY for this Python)")
    p.add_argument("--budget-s", type=float, default=None, help="time for all parts (default 225 on cuda, 1800 on cpu)")
    args = p.parse_args(argv)
    budget = args.budget_s or (225.0 if args.device == "cuda" else 1800.0)
    start = time.monotonic()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    carry = Path(args.carry) if args.carry else REPO / ".gpu-carry" / f"py{_python_tag().replace('.', '')}"
    work = Path(tempfile.mkdtemp(prefix="mgc-"))  # short: Ray's socket paths live under it
    # A throwaway local Ray of its own (RAY_TMPDIR: never another session's cluster on a shared machine).
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_TMPDIR": str(work),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")]))}
    summary = open(out / "summary.txt", "w")

    def say(line: str) -> None:
        summary.write(line + "\n")
        summary.flush()
        print(f"gpu_check: {line}", flush=True)

    machine = describe_machine(env)
    for line in machine:
        say(line)
    # Ray is unpacked while (a) runs: (a) needs none of it.
    ray_box: list[RaySource] = []
    unpacker = threading.Thread(target=lambda: ray_box.append(_find_ray_safely(carry, env, work)), daemon=True)
    unpacker.start()
    results: list[PartResult] = []
    try:
        with open(out / "a_throughput.txt", "w") as log:
            timeout = part_timeout(budget - (time.monotonic() - start), ["b", "c"], budget)
            results.append(part_a(args, env, log, timeout))
        say(results[-1].line())
        unpacker.join()
        ray = ray_box[0]
        say(f"Ray: {ray.detail}")
        sklearn_ok = "scikit-learn MISSING" not in machine
        for part, run in (("b", part_b), ("c", part_c)):
            with open(out / f"{part}_{'train' if part == 'b' else 'pbt'}.txt", "w") as log:
                if not ray.ok:
                    results.append(PartResult(part, BLOCKED if ray.blocked else FAILED, ray.detail))
                elif not sklearn_ok:
                    results.append(PartResult(part, BLOCKED, "scikit-learn is missing (the digits data set needs it)"))
                else:
                    later = ["c"] if part == "b" else []
                    deadline = time.monotonic() + part_timeout(budget - (time.monotonic() - start), later, budget)
                    results.append(run(args, with_site(env, ray.site), log, deadline, work))
                log.write(results[-1].line() + "\n")
            say(results[-1].line())
    finally:
        code = exit_code(results)
        bad = [f"{r.part}: {r.status}" for r in results if r.status != OK]
        say(f"{'ok' if code == 0 else 'FAILED (' + ', '.join(bad or ['not every part ran']) + ')'} "
            f"in {time.monotonic() - start:.0f} s on {args.device}")
        summary.close()
        shutil.rmtree(work, ignore_errors=True)
    return code


def _find_ray_safely(carry: Path, env: dict, work: Path) -> RaySource:
    try:
        return find_ray(carry, env, work)
    except Exception as exc:  # a damaged archive: say so in (b) and (c), never stop (a)
        return RaySource(False, f"the carried Ray could not be unpacked: {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    sys.exit(main())
