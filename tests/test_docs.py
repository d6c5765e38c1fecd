"""The README is a front door and docs/ a guide that holds together: the README stays short, every
relative link (and its #anchor) resolves, docs/README.md lists every page, every results table sits
beside the commit it was measured at, CI runs the README's test command, and the README's Python
example runs."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAX_README_LINES = 200

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
# A commit as these pages write one: 7-40 hex digits, at least one digit and one letter (so that
# neither "2026" nor "deface" counts).
COMMIT = re.compile(r"\b(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b")


def _pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md")), ROOT / "benchmarks" / "README.md"]


def _prose(text: str) -> list[str]:
    """The lines outside fenced code blocks (links and headings there are not markdown)."""
    out, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            out.append(line)
    return out


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for line in _prose(page.read_text()):
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            slug = _slug(m.group(1))
            n = seen.get(slug, 0)
            anchors.add(slug if n == 0 else f"{slug}-{n}")
            seen[slug] = n + 1
    return anchors


def _relative_links(page: Path) -> list[str]:
    targets = [t for line in _prose(page.read_text()) for t in LINK.findall(line)]
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t)]  # http:, https:, mailto: ...


def _broken_links(page: Path, root: Path = ROOT) -> list[str]:
    broken = []
    for target in _relative_links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(f"{target} (no heading #{anchor} in {file.relative_to(root)})")
    return broken


def _sections(text: str) -> list[list[str]]:
    """Text split at headings (any level), fenced code included in its section."""
    sections: list[list[str]] = [[]]
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if not fenced and re.match(r"#{1,6}\s", line):
            sections.append([])
        sections[-1].append(line)
    return sections


def _has_number_table(section: list[str]) -> bool:
    """A table row with a cell past the first that starts with a number (a measurement)."""
    for line in section:
        if line.startswith("|") and not re.match(r"\|[\s|:-]+\|?$", line):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if any(re.match(r"\**[+\-−]?\d", c) for c in cells[1:]):
                return True
    return False


def undated_tables(text: str) -> list[str]:
    """The rule for results: every section holding a table of numbers names a commit.

    Returns the first line of each section that breaks it."""
    return [s[0] for s in _sections(text) if _has_number_table(s) and not COMMIT.search("\n".join(s))]


def test_the_readme_is_a_front_door_not_a_manual():
    lines = README.read_text().splitlines()
    assert len(lines) < MAX_README_LINES, f"README.md has {len(lines)} lines; move reference text to a docs/ page"


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves_to_a_file_and_heading(page):
    assert _broken_links(page) == []


def test_a_broken_link_and_a_missing_anchor_are_caught(tmp_path):
    (tmp_path / "a.md").write_text("# Title\n\n## The `few_shot` study: results (5 seeds)\n")
    page = tmp_path / "b.md"
    page.write_text("[ok](a.md#the-few_shot-study-results-5-seeds) [file](gone.md) [anchor](a.md#nowhere)\n"
                    "[web](https://example.org/x.md)\n```\n[in code](ignored.md)\n```\n")
    assert _broken_links(page, root=tmp_path) == ["gone.md (no such file)", "a.md#nowhere (no heading #nowhere in a.md)"]


def test_docs_readme_lists_every_page():
    index = DOCS / "README.md"
    listed = {Path(t.partition("#")[0]).name for t in _relative_links(index)}
    pages = {p.name for p in DOCS.glob("*.md")} - {"README.md"}
    assert pages - listed == set(), "add a line for each new page to docs/README.md"


def test_every_results_table_names_its_commit():
    results = README.read_text().split("\n## Results\n", 1)
    assert len(results) == 2 and _has_number_table(results[1].splitlines()), "the README has a Results section with tables"
    assert undated_tables(README.read_text()) == []


def test_the_commit_rule_can_fail():
    table = "| arm | robust % |\n|---|---|\n| fixed | 37.9 [33.0, 42.9] |\n"
    assert undated_tables(f"## A\n\nMeasured in 2026.\n\n{table}") == ["## A"]
    assert undated_tables(f"## A\n\nMeasured at c68f9d9.\n\n{table}") == []
    assert undated_tables("## A\n\n| page | what |\n|---|---|\n| [x](x.md) | the 2 studies |\n") == []


def _readme_commands() -> dict[str, str]:
    """Quick start's numbered commands: {"1": "python3 -m venv ...", "2": ...}."""
    block = README.read_text().split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands, number = {}, None
    for line in block.splitlines():
        m = re.match(r"# (\d)\. ", line)
        if m:
            number = m.group(1)
        elif line.strip() and not line.startswith("#"):
            commands[number] = line.strip()
    return commands


def test_ci_runs_the_readme_test_command():
    steps = [s.strip() for s in _readme_commands()["2"].split("&&")]
    assert steps[0] == "python3 -m venv .venv"
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.lstrip().startswith(("#", "set ", "cd ", "export "))]
    assert ci[0] == steps[0]
    # the same install (pip's -q aside) and the same test command, last
    assert [w for w in shlex.split(ci[1]) if w != "-q"] == shlex.split(steps[1])
    assert ci[-1] == steps[-1] == ".venv/bin/pytest -q"


def readme_example() -> str:
    """The first python block under the README's "## From Python" heading."""
    parts = README.read_text().split("\n## From Python\n", 1)
    assert len(parts) == 2 and "```python\n" in parts[1], "the README's Python example is under '## From Python'"
    return parts[1].split("```python\n", 1)[1].split("```", 1)[0]


# The example at full size trains for minutes; these replace its sizes and its study folder, and
# nothing else, so every call it makes runs as written.
TINY = {
    '{"method": "pgd-at", "dataset": "mnist5k"}':
        '{"method": "pgd-at", "dataset": "digits", "rounds": 2, "steps_per_round": 2, "batch_size": 50, '
        '"val_size": 50, "device": "cpu"}',
    'aa_version="fast")': 'aa_version="fast", n=50)',
    '"studies/learned_vs_searched-smoke"': "STUDY",
}


@pytest.mark.slow  # trains, runs the judge with AutoAttack and loads a study: ~30-90 s on 2 shared cores
def test_the_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    from tests.analysis_study import build_study

    code = readme_example()
    for old, new in TINY.items():
        assert code.count(old) == 1, f"the README's example no longer has {old}; update TINY in {__file__}"
        code = code.replace(old, new)
    study = build_study(tmp_path / "study")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    scope = {"STUDY": str(study)}
    exec(compile(code, str(README), "exec"), scope)
    out = capsys.readouterr().out
    assert (tmp_path / "runs" / "example" / "checkpoint.pt").exists()
    assert {"robust_acc", "trusted", "untrusted_reasons"} <= set(scope["verdict"]) and scope["verdict"]["n"] == 50
    assert scope["rounds"]["round"].tolist() == [1, 2]
    arms = scope["arms"].set_index("arm")
    # The fixture's untrusted tuned-s2 counts at its worst case (0, no Square), never dropped.
    assert arms.loc["tuned", "n_untrusted"] == 1 and arms.loc["tuned", "robust_mean"] == pytest.approx((0.41 + 0.41) / 3)
    assert len(scope["s"].models) > 0 and "fixed" in set(scope["s"].models["arm"])
    assert "val/robust_acc" in out and "fixed" in out
