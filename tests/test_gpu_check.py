"""The pure parts of the GPU check (benchmarks/gpu_check.py) and of the folder that carries Ray to
it (benchmarks/prepare_gpu_carry.py): no network, no GPU, no Ray started."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import stat
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return module


prep = _benchmark("prepare_gpu_carry")
check = _benchmark("gpu_check")

# A small requirement graph in the shape of ray[tune,train]'s metadata.
GRAPH = {
    "ray": ["click>=7.0", "jsonschema", "pyyaml", 'pandas; extra == "tune"', 'pyarrow>=17; extra == "tune"',
            'pydantic<3; python_version < "3.14" and extra == "train"', 'fastapi; extra == "serve"',
            'py-spy; python_version < "3.12" and extra == "default"'],
    "click": [], "pyyaml": [], "pyarrow": ["numpy>=1.16"], "numpy": [], "fastapi": [],
    "jsonschema": ["attrs>=22", "referencing", 'importlib-resources; python_version < "3.9"'],
    "attrs": [], "referencing": ["attrs"], "importlib-resources": [],
    "pandas": ["numpy", "python-dateutil", 'tzdata; python_version >= "3.12"'], "python-dateutil": ["six"],
    "six": [], "tzdata": [], "pydantic": ["pydantic-core==2.50.5", "typing-extensions"], "pydantic-core": [],
    "typing-extensions": [],
}


def test_closure_follows_extras_and_markers_and_stops_at_what_the_target_has():
    got = prep.closure(["ray[tune,train]"], GRAPH.__getitem__, ["PyYAML", "pandas", "attrs", "typing_extensions"], "3.12")
    # pandas is there, so its needs (numpy through it, dateutil, tzdata) are the target's business;
    # numpy still comes in through pyarrow. No serve, no default extra, no old-Python backport.
    assert set(got) == {"ray", "click", "jsonschema", "referencing", "pyarrow", "numpy", "pydantic", "pydantic-core"}
    assert got["ray"] == ["train", "tune"]


def test_closure_evaluates_markers_for_the_target_python():
    got = prep.closure(["ray[tune]"], GRAPH.__getitem__, [], "3.11")
    assert "tzdata" not in got and {"pandas", "python-dateutil", "six"} <= set(got)
    assert "tzdata" in prep.closure(["ray[tune]"], GRAPH.__getitem__, [], "3.12")


def test_the_limit_counts_the_working_tree_and_zero_means_none():
    mib = prep.MIB
    assert prep.fits(60 * mib, 3 * mib, 64 * mib)
    assert not prep.fits(62 * mib, 2 * mib, 64 * mib)  # together over, by the manifest's slack
    assert prep.fits(500 * mib, 3 * mib, 0)


def test_a_wheel_is_unpacked_as_pip_would_keeping_executables(tmp_path):
    wheel = tmp_path / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("demo/__init__.py", "x = 1\n")
        exe = zipfile.ZipInfo("demo/core/raylet")
        exe.external_attr = (stat.S_IFREG | 0o755) << 16
        z.writestr(exe, b"\x7fELF")
        z.writestr("demo-1.0.data/purelib/demo_extra.py", "")
        z.writestr("demo-1.0.data/scripts/demo-cli", "#!/bin/sh\n")
        z.writestr("demo-1.0.dist-info/METADATA", "Name: demo\n")
    site = tmp_path / "site"
    prep.unpack_wheel(wheel, site)
    assert (site / "demo_extra.py").is_file() and not (site / "demo-cli").exists()
    assert os.access(site / "demo" / "core" / "raylet", os.X_OK)
    assert (site / "demo-1.0.dist-info" / "METADATA").is_file()
    (site / "ray" / "jars").mkdir(parents=True)
    (site / "ray" / "jars" / "a.jar").write_bytes(b"0" * 100)
    assert prep.prune(site) == 100 and not (site / "ray" / "jars").exists()


def test_wheel_names_match_the_target_python():
    assert prep._wheel_matches("ray-2.60.0-cp312-cp312-manylinux2014_x86_64.whl", "ray", "2.60.0", "3.12")
    assert not prep._wheel_matches("ray-2.60.0-cp311-cp311-manylinux2014_x86_64.whl", "ray", "2.60.0", "3.12")
    assert prep._wheel_matches("referencing-0.37.0-py3-none-any.whl", "referencing", "0.37.0", "3.11")
    assert prep._wheel_matches("pydantic_core-2.50.5-cp312-cp312-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
                               "pydantic-core", "2.50.5", "3.12")


def _results(**statuses):
    return [check.PartResult(part, status, "") for part, status in statuses.items()]


def test_the_exit_status_is_zero_only_when_every_part_is_ok():
    assert check.exit_code(_results(a="ok", b="ok", c="ok")) == 0
    assert check.exit_code(_results(a="ok", b="BLOCKED", c="BLOCKED")) == 1
    assert check.exit_code(_results(a="ok", b="ok", c="SKIPPED")) == 1
    assert check.exit_code(_results(a="ok", b="ok")) == 1  # a part that never reported
    assert check.exit_code([]) == 1


def test_each_part_leaves_the_later_parts_their_share():
    assert check.part_timeout(225, ["b", "c"], 225) == pytest.approx(225 * 0.40)
    assert check.part_timeout(200, ["c"], 225) == pytest.approx(200 - 0.35 * 225)
    assert check.part_timeout(5, ["c"], 225) == 10.0  # never less than the floor


def _manifest(folder: Path, **changes) -> None:
    manifest = {"python": f"{sys.version_info.major}.{sys.version_info.minor}", "ray": "2.60.0", "fits": True,
                "packages": {"ray": "2.60.0", "pyarrow": "26.0.1"},
                "bytes": {"wheels": 120 << 20, "unpacked": 400 << 20, "pruned_away": 50 << 20, "archive": 70 << 20,
                          "working_tree": 2 << 20, "limit": 64 << 20}, **changes}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_ray_parts_are_blocked_with_the_measured_sizes_when_it_did_not_fit(tmp_path):
    _manifest(tmp_path / "carry", fits=False)
    ray = check.carried_ray(tmp_path / "carry", dict(os.environ), tmp_path / "work")
    assert not ray.ok and ray.blocked
    assert "archive 70.0 MiB + working tree 2.0 MiB, limit 64 MiB: does NOT fit" in ray.detail
    assert check.carried_ray(tmp_path / "none", dict(os.environ), tmp_path / "work").blocked
    _manifest(tmp_path / "other", python="2.7")
    assert "built for Python 2.7" in check.carried_ray(tmp_path / "other", dict(os.environ), tmp_path / "work").detail


def test_the_carried_ray_is_unpacked_and_imported_from_there_only(tmp_path):
    carry = tmp_path / "carry"
    _manifest(carry)
    files = {"ray/__init__.py": "__version__ = 'carried'\n", "ray/tune/__init__.py": "", "ray/train/__init__.py": "",
             "ray/train/torch.py": ""}
    with tarfile.open(carry / "site.tar.xz", "w:xz") as tar:
        for name, text in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text.encode()))
    ray = check.carried_ray(carry, dict(os.environ), tmp_path / "work")
    assert ray.ok, ray.detail
    assert ray.site == str(tmp_path / "work" / "site") and "ray carried" in ray.detail
    assert check.with_site({"PYTHONPATH": "/repo"}, ray.site)["PYTHONPATH"] == os.pathsep.join([ray.site, "/repo"])


def test_the_pbt_part_needs_both_trials_finished_and_an_exploit(tmp_path):
    for trial, (start, end) in {"t1": (10, 20), "t2": (12, 25)}.items():
        rows = [{"round": r, "timestamp": start + (end - start) * r // 4} for r in range(1, 5)]
        (tmp_path / trial).mkdir()
        (tmp_path / trial / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    facts = check.pbt_facts(tmp_path)
    assert facts["exploits"] == 0 and facts["overlap"]
    assert check.pbt_verdict(facts)[0] == "FAILED"
    (tmp_path / "pbt_global.txt").write_text('["t1", "t2", 1, 1, {}, {}]\n')
    status, detail = check.pbt_verdict(check.pbt_facts(tmp_path))
    assert status == "ok" and "1 exploit(s)" in detail and "same time: yes" in detail


def test_the_throughput_line_pairs_each_precision_with_its_ratio():
    out = """torch 2.11.0+cu130, NVIDIA H100: PGD-10 AT, ...; fp32 with TF32 ON (matmul precision 'high', cudnn.allow_tf32 True)
setting                                   round s  images/s
bf16: bare hand-written PGD-10 loop        1.000    5120.0
bf16: metaadv trainer (one process)        1.100    4654.5
bf16: metaadv / bare: 0.909 (target >= 0.90) ok
fp32: bare hand-written PGD-10 loop        2.000    2560.0
fp32: metaadv trainer (one process)        2.400    2133.3
fp32: metaadv / bare: 0.833 (target >= 0.90) below target
"""
    assert check.throughput_summary(out) == (
        "bf16: bare 5120.0, metaadv 4654.5 images/s, metaadv / bare 0.909 ok; "
        "fp32: bare 2560.0, metaadv 2133.3 images/s, metaadv / bare 0.833 below target "
        "(fp32 with TF32 ON (matmul precision 'high', cudnn.allow_tf32 True))")
