"""Run the test suite under several CPU-kernel settings, one pytest process per setting.

The same seeded computation rounds differently under other oneDNN ISAs, ATen vector kernels
and thread counts, and the difference can grow over a few training steps; a test whose margin
holds under one setting only is fragile (it passes in CI and fails on a user's CPU). This
sweep runs the suite under each setting and prints one pass/fail line per setting; it exits 1
if any setting failed.

Settings are varied one factor at a time from the default (not the full product, which
would take 2 x 3 x 2 x 2 suite runs):

    default        nothing set: oneDNN and ATen pick the best kernels of this CPU, 1 thread
    isa-avx2       ONEDNN_MAX_CPU_ISA=AVX2
    isa-avx512     ONEDNN_MAX_CPU_ISA=AVX512_CORE (a no-op on a CPU without AVX-512)
    aten-avx2      ATEN_CPU_CAPABILITY=avx2
    avx2           ATEN_CPU_CAPABILITY=avx2 with ONEDNN_MAX_CPU_ISA=AVX2: both kernel families of an
                   AVX2-only CPU, as close to one as software gets on an AVX-512 machine (either
                   alone is not: ATen's kernels and oneDNN's differ separately)
    threads-2      METAADV_TEST_THREADS=2 (tests/conftest.py sets torch's thread count)

and, only when named with --configs: isa-sse41 (ONEDNN_MAX_CPU_ISA=SSE41) and aten-default
(ATEN_CPU_CAPABILITY=default, no vector kernels in ATen: the tests with numeric margins should
pass there too; `--configs aten-default -m margins` runs just those, see tests/conftest.py).

The CPU's own flags come first in the output (lscpu's avx2 / avx512* / amx* / fma), since the
settings can only cap kernels below what the CPU has.

    .venv/bin/python benchmarks/sweep_cpu_kernels.py                      # the whole suite, 5 settings
    .venv/bin/python benchmarks/sweep_cpu_kernels.py -m "not slow"        # extra arguments go to pytest
    .venv/bin/python benchmarks/sweep_cpu_kernels.py --configs aten-avx2,isa-sse41 tests/test_generator.py

About 2.5 minutes of suite per setting on 2 idle cores. Each setting's pytest output is kept
under --log-dir.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from metaadv.training.precision import cpu_vector_flags  # noqa: E402

KERNEL_VARS = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "METAADV_TEST_THREADS")

CONFIGS = {
    "default": {},
    "isa-avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "isa-avx512": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"},
    "aten-avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "threads-2": {"METAADV_TEST_THREADS": "2"},
}
EXTRA_CONFIGS = {
    "isa-sse41": {"ONEDNN_MAX_CPU_ISA": "SSE41"},
    "aten-default": {"ATEN_CPU_CAPABILITY": "default"},
}
ALL_CONFIGS = {**CONFIGS, **EXTRA_CONFIGS}


def _env(settings: dict[str, str]) -> dict[str, str]:
    # Start from a clean slate: a variable left set in the caller's shell would leak into every setting.
    env = {k: v for k, v in os.environ.items() if k not in KERNEL_VARS}
    env.update(settings)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _aten_capability(env: dict[str, str]) -> str:
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
                         env=env, capture_output=True, text=True)
    return out.stdout.strip() or "?"


def _summary(output: str) -> str:
    """pytest's final line without its '=' padding, e.g. '1 failed, 407 passed, 8 skipped in 150.1s'."""
    lines = [ln.strip("= ") for ln in output.splitlines() if re.search(r"\b(passed|failed|error|no tests ran)\b", ln)]
    return lines[-1] if lines else "no pytest summary (see log)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Unknown arguments are passed to pytest (test paths, -k, -m).")
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help=f"comma list of settings to run, from {', '.join(ALL_CONFIGS)} (default: %(default)s)")
    parser.add_argument("--log-dir", type=Path, default=None, help="where each setting's pytest output goes")
    args, pytest_args = parser.parse_known_args(argv)
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in ALL_CONFIGS]
    if unknown or not names:
        parser.error(f"--configs: unknown {', '.join(unknown) or '(empty)'}; choose from {', '.join(ALL_CONFIGS)}")
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="metaadv-sweep-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f"sweep: {len(names)} settings, pytest {' '.join(pytest_args) or '(whole suite)'}; logs in {log_dir}",
          flush=True)
    print(f"cpu flags: {cpu_vector_flags()}", flush=True)

    failed = []
    for name in names:
        env = _env(ALL_CONFIGS[name])
        cmd = [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", *pytest_args]
        start = time.monotonic()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        output = proc.stdout + proc.stderr
        (log_dir / f"{name}.log").write_text(output)
        ok = proc.returncode == 0
        if not ok:
            failed.append(name)
        settings = " ".join(f"{k}={v}" for k, v in ALL_CONFIGS[name].items()) or "(nothing set)"
        print(f"{'PASS' if ok else 'FAIL'}  {name:<13} {settings:<32} aten={_aten_capability(env):<7} "
              f"{_summary(output)}  [{time.monotonic() - start:.0f}s]", flush=True)
        for line in output.splitlines():
            if line.startswith(("FAILED ", "ERROR ")):
                print(f"      {line}", flush=True)
    print(f"sweep: {len(names) - len(failed)}/{len(names)} settings passed" +
          (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
