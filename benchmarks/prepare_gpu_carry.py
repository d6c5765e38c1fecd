"""Prepare the folder that carries Ray to a bare GPU machine (issue 25).

The lent GPU machine has torch with CUDA but no Ray and no package registry; it receives the
working tree plus at most 64 MiB of named ignored paths. Ray's wheel is about 79 MB, so it cannot
travel whole. This script builds, here, a folder that can:

1. the requirements of ``ray[tune,train]`` (the version installed in the running Python) are
   walked through the installed packages' metadata, evaluated for the target Python, and every
   package the target already has (``--have``) is left out, with its own requirements;
2. each remaining package's cp3XX manylinux x86_64 wheel is downloaded (``pip download``, the
   version installed here) and unpacked into one site folder;
3. what metaadv never imports is cut from Ray (:data:`RAY_PRUNE`: the Java jars, rllib, serve,
   llm, the dashboard's web client);
4. the site folder is packed into ``OUT/site.tar.xz`` and ``OUT/manifest.json`` records the
   packages and the sizes (wheels, unpacked, pruned, archive, and the working tree that travels
   with it).

When the archive and the working tree together exceed ``--limit-mib`` the archive is not kept:
the manifest alone says so (``"fits": false``) and benchmarks/gpu_check.py reports the Ray parts
blocked with those sizes. Usage, from the repository root, with the Python that has Ray::

    .venv/bin/python benchmarks/prepare_gpu_carry.py                 # .gpu-carry/py312, for the GPU image
    .venv/bin/python benchmarks/prepare_gpu_carry.py --python-version 3.11 \\
        --have-python /tmp/venv/bin/python --limit-mib 0            # a clean 3.11 venv (the CPU test)

``--have image`` (the default) is the 'cuda' image's package list as this workplace last read it
(/work/.library/device/KINDS.md, 2026-11-17), its versions unknown: typing-extensions is carried
anyway (:data:`IMAGE_OVERRIDES`); ``--have-python PY`` asks an interpreter what it has (names and
versions are then its own); ``--have none`` carries every requirement.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

MIB = 1 << 20
DEFAULT_LIMIT_MIB = 64
ROOTS = ("ray[tune,train]",)

# Parts of the Ray wheel that neither Ray Tune, Ray Train nor metaadv import (relative to site/).
RAY_PRUNE = ("ray/jars", "ray/rllib", "ray/serve", "ray/llm", "ray/dashboard/client")

# The 'cuda' image of the lent machines (Python 3.12), as read on 2026-11-17.
IMAGE_PACKAGES = """
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools
formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna
imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe
matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals
networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13
nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft
pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers
statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope
triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
""".split()

# Carried even though the image has them: the image's version is not known here and a carried
# package needs a recent one (pydantic 2.14 needs typing-extensions >= 4.16). typing_extensions
# only adds names, so a newer copy first on the path is safe for everything else on the image.
IMAGE_OVERRIDES = ("typing-extensions",)

PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")


def normalize(name: str) -> str:
    """PEP 503 name: ``PyYAML`` -> ``pyyaml``, ``typing_extensions`` -> ``typing-extensions``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def marker_env(python_version: str) -> dict[str, str]:
    """The marker environment of CPython ``python_version`` on Linux x86_64."""
    return {"python_version": python_version, "python_full_version": f"{python_version}.0", "os_name": "posix",
            "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
            "platform_python_implementation": "CPython", "implementation_name": "cpython",
            "implementation_version": f"{python_version}.0", "platform_release": "", "platform_version": ""}


def closure(roots, requires, have, python_version: str) -> dict[str, list[str]]:
    """The packages to carry: ``roots`` and everything they need on the target, minus ``have``.

    ``requires(name) -> list of requirement strings`` (a distribution's ``Requires-Dist``);
    ``have``: normalized names the target already holds, whose own requirements are then the
    target's business. Returns {normalized name: [the extras asked of it]}, roots first.
    """
    from packaging.requirements import Requirement

    env = marker_env(python_version)
    have = {normalize(n) for n in have}
    wanted: dict[str, set[str]] = {}
    queue = [Requirement(r) for r in roots]
    while queue:
        req = queue.pop(0)
        name = normalize(req.name)
        if name in have:
            continue
        first = name not in wanted
        extras = set(req.extras) - wanted.get(name, set())
        if not first and not extras:
            continue
        wanted.setdefault(name, set()).update(extras)
        for text in requires(name):
            sub = Requirement(text)
            if sub.marker is None:
                needed = first
            else:
                needed = (first and sub.marker.evaluate({**env, "extra": ""})) or \
                    any(sub.marker.evaluate({**env, "extra": e}) for e in extras)
            if needed:
                queue.append(sub)
    return {name: sorted(extras) for name, extras in wanted.items()}


def installed_requires(name: str) -> list[str]:
    from importlib import metadata

    return list(metadata.requires(name) or [])


def installed_version(name: str) -> str:
    from importlib import metadata

    return metadata.version(name)


def have_from_python(python: str) -> list[str]:
    """The distributions an interpreter has installed (its site-packages, as importlib sees them)."""
    code = "import importlib.metadata as m; print('\\n'.join(sorted({d.metadata['Name'] for d in m.distributions()})))"
    out = subprocess.run([python, "-c", code], check=True, capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line.strip()]


def download(pins: dict[str, str], python_version: str, dest: Path) -> list[Path]:
    """The wheels of ``pins`` for CPython ``python_version`` on manylinux x86_64 (cached in ``dest``)."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", python_version,
           "--implementation", "cp", *[a for p in PLATFORMS for a in ("--platform", p)], "-d", str(dest),
           *[f"{name}=={version}" for name, version in sorted(pins.items())]]
    subprocess.run(cmd, check=True)
    wheels = []
    for name, version in sorted(pins.items()):
        found = [w for w in dest.glob("*.whl") if _wheel_matches(w.name, name, version, python_version)]
        if not found:
            raise SystemExit(f"prepare_gpu_carry: no wheel of {name}=={version} for Python {python_version} in {dest}")
        wheels.append(sorted(found)[-1])
    return wheels


def target_tags(python_version: str) -> set:
    """The wheel tags CPython ``python_version`` accepts on manylinux x86_64."""
    from packaging import tags

    version = tuple(int(x) for x in python_version.split("."))
    abi = "cp" + python_version.replace(".", "")
    return set(tags.cpython_tags(version, abis=[abi, "abi3", "none"], platforms=PLATFORMS)) | \
        set(tags.compatible_tags(version, interpreter=abi, platforms=PLATFORMS))


def _wheel_matches(filename: str, name: str, version: str, python_version: str) -> bool:
    from packaging.utils import parse_wheel_filename

    wheel_name, wheel_version, _, wheel_tags = parse_wheel_filename(filename)
    return (wheel_name == name and str(wheel_version) == version
            and bool(set(wheel_tags) & target_tags(python_version)))


def unpack_wheel(wheel: Path, site: Path) -> None:
    """A wheel into ``site``, as pip installs it: ``*.data/purelib`` and ``platlib`` merged into the
    site, other ``*.data`` parts (scripts, headers) left out, file modes (executables) kept."""
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            parts = info.filename.split("/")
            if parts[0].endswith(".data"):
                if len(parts) < 3 or parts[1] not in ("purelib", "platlib"):
                    continue
                parts = parts[2:]
            if info.is_dir() or not parts[-1]:
                continue
            target = site.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with z.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                target.chmod(mode | 0o644)


def tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def prune(site: Path, paths=RAY_PRUNE) -> int:
    """Remove ``paths`` (relative to ``site``); the bytes removed."""
    removed = 0
    for rel in paths:
        target = site / rel
        if target.is_dir():
            removed += tree_bytes(target)
            shutil.rmtree(target)
        elif target.is_file():
            removed += target.stat().st_size
            target.unlink()
    return removed


def working_tree_bytes(repo: Path) -> int:
    """What travels besides the carried folder: tracked and untracked-not-ignored files."""
    out = subprocess.run(["git", "-C", str(repo), "ls-files", "-co", "--exclude-standard", "-z"],
                         check=True, capture_output=True).stdout
    total = 0
    for rel in out.decode().split("\0"):
        f = repo / rel
        if rel and f.is_file() and not f.is_symlink():
            total += f.stat().st_size
    return total


def fits(archive_bytes: int, tree: int, limit_bytes: int, slack: int = 64 * 1024) -> bool:
    """True when the carried archive (plus a manifest's ``slack``) and the working tree fit the
    limit; ``limit_bytes`` 0 means no limit."""
    return limit_bytes == 0 or archive_bytes + slack + tree <= limit_bytes


def pack(site: Path, archive: Path) -> None:
    with tarfile.open(archive, "w:xz", preset=9) as tar:
        for entry in sorted(site.iterdir()):
            tar.add(entry, arcname=entry.name)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--python-version", default="3.12", help="the target's Python, major.minor (default 3.12: the GPU image)")
    p.add_argument("--out", default=None, help="the carried folder (default .gpu-carry/pyXY)")
    have = p.add_mutually_exclusive_group()
    have.add_argument("--have", default="image", choices=("image", "none"),
                      help="what the target already has: the GPU image's packages (default) or nothing")
    have.add_argument("--have-python", metavar="PY", help="ask this interpreter what the target has")
    p.add_argument("--wheels", default=None, help="download cache (default ~/.cache/metaadv-gpu-carry/wheels-pyXY)")
    p.add_argument("--limit-mib", type=float, default=DEFAULT_LIMIT_MIB,
                   help="what may travel, working tree included (default 64; 0 = no limit)")
    args = p.parse_args(argv)
    if not re.fullmatch(r"3\.\d+", args.python_version):
        p.error(f"--python-version expects major.minor, such as 3.12; got {args.python_version!r}")
    tag = "py" + args.python_version.replace(".", "")
    repo = Path(__file__).resolve().parents[1]
    out = Path(args.out or repo / ".gpu-carry" / tag)
    cache = Path(args.wheels or Path.home() / ".cache" / "metaadv-gpu-carry" / f"wheels-{tag}")

    have_names = have_from_python(args.have_python) if args.have_python else (IMAGE_PACKAGES if args.have == "image" else [])
    wanted = closure(ROOTS, installed_requires, have_names, args.python_version)
    if not args.have_python and args.have == "image":
        wanted.update({name: [] for name in IMAGE_OVERRIDES})
    pins = {name: installed_version(name) for name in wanted}
    print(f"carrying {len(pins)} packages for Python {args.python_version}: "
          + ", ".join(f"{n}=={v}" for n, v in sorted(pins.items())), flush=True)
    wheels = download(pins, args.python_version, cache)

    out.mkdir(parents=True, exist_ok=True)
    for stale in ("site.tar.xz", "manifest.json"):
        (out / stale).unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="gpu-carry-") as tmp:
        site = Path(tmp) / "site"
        for wheel in wheels:
            unpack_wheel(wheel, site)
        unpacked = tree_bytes(site)
        pruned = prune(site)
        archive = out / "site.tar.xz"
        print(f"packing {(unpacked - pruned) / MIB:.1f} MiB into {archive} (xz -9: a minute or more)", flush=True)
        pack(site, archive)
    archive_bytes = archive.stat().st_size
    tree = working_tree_bytes(repo)
    limit = int(args.limit_mib * MIB)
    ok = fits(archive_bytes, tree, limit)
    manifest = {
        "python": args.python_version, "platform": "manylinux x86_64", "have": args.have_python or args.have,
        "ray": pins.get("ray"), "packages": dict(sorted(pins.items())), "pruned": list(RAY_PRUNE),
        "bytes": {"wheels": sum(w.stat().st_size for w in wheels), "unpacked": unpacked, "pruned_away": pruned,
                  "archive": archive_bytes, "working_tree": tree, "limit": limit},
        "fits": ok,
    }
    if not ok:
        archive.unlink()
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(size_line(manifest))
    return 0 if ok else 1


def size_line(manifest: dict) -> str:
    """One line of sizes in MiB, as the check repeats it when it reports the Ray parts blocked."""
    b = manifest["bytes"]
    limit = f"{b['limit'] / MIB:.0f} MiB" if b["limit"] else "no limit"
    verdict = "fits" if manifest["fits"] else "does NOT fit (archive not kept)"
    return (f"Ray {manifest['ray']} for Python {manifest['python']} with {len(manifest['packages'])} packages: wheels "
            f"{b['wheels'] / MIB:.1f} MiB, unpacked {b['unpacked'] / MIB:.1f} MiB ({b['pruned_away'] / MIB:.1f} MiB pruned), "
            f"archive {b['archive'] / MIB:.1f} MiB + working tree {b['working_tree'] / MIB:.1f} MiB, limit {limit}: {verdict}")


if __name__ == "__main__":
    sys.exit(main())
