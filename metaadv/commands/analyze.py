"""``metaadv analyze DIR... [--out REPORT_DIR]``: report.md, tables as CSV and PNG plots from results
(by default in ``DIR/report`` when one DIR is given)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import UserError

DESCRIPTION = """Read any mix of study folders (metaadv study), Tune experiment folders (metaadv tune) and
run folders (metaadv train / meta) and write a report: report.md (the main table per arm with cost (a)
and (b), declared contrasts with 95% CIs, a plain verdict), every table as CSV, and PNG plots (robust
accuracy vs cost, schedules side by side, the clean-vs-robust Pareto front, per-seed dots).
See docs/analysis.md."""


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("analyze", help="report (markdown, CSV, plots) from studies, experiments and runs",
                       description=DESCRIPTION)
    p.add_argument("dirs", nargs="+", metavar="DIR", help="study, Tune experiment or run folder (or a folder holding them)")
    p.add_argument("--out", default=None, metavar="REPORT_DIR",
                   help="where the report goes (new, empty, or an earlier report, which is replaced); "
                        "default DIR/report when one DIR is given")

    def error(message: str):  # missing or bad arguments: one line and exit 2, like every input error
        print(f"metaadv: error: analyze: {message}", file=sys.stderr)
        sys.exit(2)

    p.error = error
    return p


def default_out(dirs: list[str]) -> Path:
    """``DIR/report`` for one folder (the analysis never reads a report back: it finds results by
    study.json, Tune's files or a run's config.json + metrics.csv); several folders need --out."""
    if len(dirs) > 1:
        raise UserError("several folders: name the report's folder with --out REPORT_DIR")
    return Path(dirs[0]) / "report"


def run(args: argparse.Namespace) -> int:
    for d in args.dirs:
        if not Path(d).is_dir():
            raise UserError(f"{d!r} is not a folder; give study, experiment or run folders")
    out = args.out or default_out(args.dirs)
    from analysis.report import partial_studies, write_report  # pandas, matplotlib, Ray's reader: only once the input is known good
    from analysis.status import status_lines

    out = write_report(args.dirs, out)
    for folder in partial_studies(args.dirs):  # a study still running: say so, and what is left (report.md has it per arm)
        print(f"partial report: {status_lines(folder)[0]}")
    plots = ", plots *.png" if any(out.glob("*.png")) else ""
    print(f"report: {out / 'report.md'}  (tables *.csv{plots} in {out})")
    return 0
