"""The ``metaadv`` command. Each sub-command lives in its own module under ``metaadv/commands``.

Bad input (a :class:`UserError`) prints one line ``metaadv: error: ...`` and exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from .commands._flag_types import FlagError
from .errors import UserError

# Sub-command modules; each defines ``add_parser(subparsers)`` and ``run(args) -> int``.
COMMANDS = [
    "metaadv.commands.train",
    "metaadv.commands.evaluate",
    "metaadv.commands.tune",
    "metaadv.commands.meta",
    "metaadv.commands.study",
    "metaadv.commands.analyze",
    "metaadv.commands.policy",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metaadv", description="Meta-adversarial training with learned and searched schedules.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(name)
        module.add_parser(sub).set_defaults(_run=module.run)
    return parser


def package_version() -> str:
    """The installed distribution's version; the source tree's ``metaadv.__version__`` when metaadv
    runs from a checkout that is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("metaadv")
    except PackageNotFoundError:
        from . import __version__

        return __version__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except FlagError as exc:  # a flag value argparse would answer with its whole usage block
        print(f"metaadv: error: {exc}", file=sys.stderr)
        return 2
    warnings.formatwarning = lambda msg, cat, *a, **k: f"metaadv: warning: {msg}\n"
    try:
        return int(args._run(args) or 0)
    except UserError as exc:
        print(f"metaadv: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("metaadv: interrupted; the last finished round is in the checkpoint (continue with --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
