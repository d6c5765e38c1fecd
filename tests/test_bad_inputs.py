"""Bad input, tried as a user would: one line ``metaadv: error: ...``, exit 2, nothing written.

Every case runs in-process (``metaadv.cli.main(argv)``, or a Python API call that must raise
:class:`UserError` with a one-line message). Each is checked for: the exit status, exactly one
line on stderr starting ``metaadv: error:``, no traceback, no run folder created, and every file
that existed before (checkpoints, config files) byte for byte unchanged.

The table in docs/errors.md is generated from these cases; regenerate it with
``METAADV_WRITE_DOCS=1 pytest tests/test_bad_inputs.py``.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

import metaadv
from metaadv._config_values import coerce
from metaadv.checkpoint import save_checkpoint
from metaadv.cli import main
from metaadv.config import TrainConfig, read_config_file
from metaadv.errors import UserError
from metaadv.meta import MetaConfig

DOC = Path(__file__).resolve().parents[1] / "docs" / "errors.md"
# Tiny sizes, so that a case which wrongly got through would fail fast instead of training for minutes.
TINY = ["--dataset", "digits", "--epochs", "1", "--steps-per-round", "1", "--val-size", "8", "--val-pgd-steps", "1"]
META_TINY = ["--dataset", "digits", "--rounds", "1", "--steps-per-round", "1", "--val-tasks", "1"]


@dataclass(frozen=True)
class Case:
    surface: str  # the command or API function, for the table
    what: str  # the bad input in words
    argv: tuple = ()  # CLI arguments; "{W}" is the world folder, "{OUT}" a run folder that must not appear
    call: Callable | None = None  # or a Python API call taking the world folder
    files: tuple = ()  # (name, text) written into the world folder before the case


def cli(surface, what, *argv, files=()):
    return Case(surface, what, tuple(argv), files=tuple(files))


def api(surface, what, call, files=()):
    return Case(surface, what, call=call, files=tuple(files))


def train(what, *argv, files=()):
    return cli("metaadv train", what, "train", "--out", "{OUT}", *TINY, *argv, files=files)


def meta(what, *argv, files=()):
    return cli("metaadv meta", what, "meta", "--out", "{OUT}", *META_TINY, *argv, files=files)


def policy_train(what, *argv, out="{OUT}"):
    return cli("metaadv policy train", what, "policy", "train", "--out", out, *TINY, *argv)


CASES = [
    # metaadv train: values accepted before that failed rounds later or did nothing.
    train("--lr-gamma 0", "--lr-gamma", "0"),
    train("--lr-gamma negative", "--lr-gamma", "-0.5"),
    train("--lr-milestones outside (0, 1]", "--lr-milestones", "0.5", "1.5"),
    train("--lr-milestones 0", "--lr-milestones", "0"),
    train("--eps-ramp-fraction outside [0, 1]", "--eps-ramp-fraction", "1.5"),
    train("--eps-ramp-by round without --eps-ramp-rounds", "--eps-ramp-by", "round"),
    train("--val-attack unknown", "--val-attack", "autoattack"),
    train("--val-apgd-iters 0", "--val-attack", "apgd-ce", "--val-apgd-iters", "0"),
    train("--vat-xi 0", "--method", "vat", "--vat-xi", "0"),
    train("--vat-weight negative", "--method", "vat", "--vat-weight", "-1"),
    train("--co-threshold negative", "--method", "fast-at", "--co-threshold", "-0.1"),
    train("--co-gap negative", "--method", "fast-at", "--co-gap", "-0.1"),
    train("--momentum negative", "--optimizer", "sgd", "--momentum", "-1"),
    # Generator methods (issue 11).
    train("unknown --gen-arch", "--method", "meta-generator", "--gen-arch", "lstm"),
    train("--gen-arch recursive with advgan", "--method", "advgan", "--gen-arch", "recursive"),
    train("--gen-unroll 0", "--method", "meta-generator", "--gen-unroll", "0"),
    train("--gen-step-ratio 0", "--method", "meta-generator", "--gen-step-ratio", "0"),
    train("--gen-final-steps negative", "--method", "meta-generator", "--gen-final-steps", "-1"),
    train("--gen-final-ratio negative", "--method", "meta-generator", "--gen-final-ratio", "-0.5"),
    train("--gen-diversity without --gen-noise", "--method", "meta-generator", "--gen-diversity", "0.5"),
    train("--gen-diversity negative", "--method", "meta-generator", "--gen-noise", "--gen-diversity", "-1"),
    train("--gen-noise with --gen-arch onestep", "--method", "meta-generator", "--gen-arch", "onestep", "--gen-noise"),
    train("--gen-step-discount 2", "--method", "meta-generator", "--gen-step-discount", "2"),
    train("unknown --gen-start", "--method", "meta-generator", "--gen-start", "far"),
    train("--gen-start random with --gen-arch noise", "--method", "meta-generator", "--gen-arch", "noise",
          "--gen-start", "random"),
    train("--no-gen-grad-input with --gen-arch recursive", "--method", "meta-generator", "--no-gen-grad-input"),
    train("config `co_guard: sometimes`", "--config", "{W}/guard.yaml", files=[("guard.yaml", "co_guard: sometimes\n")]),
    train("--lr nan", "--lr", "nan"),
    train("--eps inf", "--eps", "inf"),
    train("--eps 8 (pixel units are [0, 1])", "--eps", "8"),
    train("--eps 8/0 (a fraction dividing by zero)", "--eps", "8/0"),
    train("--steps 0", "--steps", "0"),
    train("unknown --method", "--method", "magic"),
    train("unknown --device", "--device", "tpu"),
    train("--policy-file without --controller policy", "--policy-file", "{W}/policy.pt"),
    train("--policy-file that is not a policy", "--controller", "policy", "--policy-file", "{W}/train/checkpoint.pt"),
    # --controller las (docs/las.md).
    train("--controller las with --las-eps empty", "--controller", "las", "--las-eps"),
    train("--controller las with --las-eps 2.5 (a fraction outside (0, 2])", "--controller", "las", "--las-eps", "0.5", "2.5"),
    train("--controller las with --eps 0.6 (1.75 x 0.6 is above 1 for linf)", "--controller", "las", "--eps", "0.6"),
    train("--controller las with --las-interval 0", "--controller", "las", "--las-interval", "0"),
    train("--controller las with --las-steps 2.5", "--controller", "las", "--las-steps", "3", "2.5"),
    train("--controller las with --method standard (no attack)", "--controller", "las", "--method", "standard"),
    train("--controller las with --method fast-at", "--controller", "las", "--method", "fast-at"),
    train("--controller las with --workers 2", "--controller", "las", "--workers", "2"),
    train("--out is a file", "--out", "{W}/a-file"),
    train("--resume of a meta-learning run", "--out", "{W}/meta", "--resume"),
    train("--resume of a folder without a run", "--resume"),
    # metaadv train --workers (each refused before Ray starts).
    train("--workers 0", "--workers", "0"),
    train("--cpus-per-worker without --workers", "--cpus-per-worker", "2"),
    train("--address without --workers", "--address", "auto"),
    train("--gpus-per-worker negative", "--workers", "2", "--gpus-per-worker", "-1"),
    train("--gpus-per-worker 1.5 (a fraction above one)", "--workers", "2", "--gpus-per-worker", "1.5"),
    train("--device cuda for workers without GPUs", "--workers", "2", "--device", "cuda"),
    train("--device cpu with --gpus-per-worker", "--workers", "2", "--gpus-per-worker", "1", "--device", "cpu"),
    # Config files (metaadv train --config).
    train("config `download: maybe`", "--config", "{W}/maybe.yaml", files=[("maybe.yaml", "download: maybe\n")]),
    train("config with a non-string key `1: 2`", "--config", "{W}/intkey.yaml", files=[("intkey.yaml", "1: 2\n")]),
    train("config that is a list", "--config", "{W}/list.yaml", files=[("list.yaml", "- method\n- pgd-at\n")]),
    train("config file empty", "--config", "{W}/empty.yaml", files=[("empty.yaml", "")]),
    train("config file of comments only", "--config", "{W}/comment.yaml", files=[("comment.yaml", "# eps: 0.3\n")]),
    train("JSON config file empty", "--config", "{W}/empty.json", files=[("empty.json", "\n")]),
    train("JSON config that is a list", "--config", "{W}/list.json", files=[("list.json", '["eps", 0.1]')]),
    train("config `steps: true`", "--config", "{W}/boolint.yaml", files=[("boolint.yaml", "steps: true\n")]),
    train("config `method: 3`", "--config", "{W}/method3.yaml", files=[("method3.yaml", "method: 3\n")]),
    train("config `lr_milestones: 0.5` (not a list)", "--config", "{W}/ms.yaml", files=[("ms.yaml", "lr_milestones: 0.5\n")]),
    train("config `lr: .inf`", "--config", "{W}/inf.yaml", files=[("inf.yaml", "lr: .inf\n")]),
    train("config unknown key", "--config", "{W}/typo.json", files=[("typo.json", '{"epsilon": 0.3}')]),
    train("config that does not parse", "--config", "{W}/broken.yaml", files=[("broken.yaml", "method: [unclosed\n")]),
    train("--config is a folder", "--config", "{W}"),
    train("--config missing", "--config", "{W}/missing.yaml"),
    # metaadv meta.
    meta("config `download: maybe`", "--config", "{W}/maybe.yaml", files=[("maybe.yaml", "download: maybe\n")]),
    meta("config `first_order: 2`", "--config", "{W}/fo.yaml", files=[("fo.yaml", "first_order: 2\n")]),
    meta("config with a non-string key", "--config", "{W}/intkey.yaml", files=[("intkey.yaml", "1: 2\n")]),
    meta("config that is a list", "--config", "{W}/list.yaml", files=[("list.yaml", "[1, 2]\n")]),
    meta("config file empty", "--config", "{W}/empty.yaml", files=[("empty.yaml", "")]),
    meta("--inner-lr nan", "--inner-lr", "nan"),
    meta("--ways 1", "--ways", "1"),
    meta("--eps 8/x (neither a number nor a fraction)", "--eps", "8/x"),
    meta("--resume of a training run", "--out", "{W}/train", "--resume"),
    meta("--budget-grad-evals negative", "--budget-grad-evals", "-1"),
    meta("mnist5k-rot --ways 18 (17 meta-train classes)", "--dataset=mnist5k-rot", "--ways", "18"),
    meta("--workers 0", "--workers", "0"),
    meta("--cpus-per-worker 0", "--workers", "2", "--cpus-per-worker", "0"),
    # metaadv evaluate.
    cli("metaadv evaluate", "a meta-learning checkpoint", "evaluate", "{W}/meta"),
    cli("metaadv evaluate", "a policy file", "evaluate", "{W}/policy.pt"),
    cli("metaadv evaluate", "a file that is not a checkpoint", "evaluate", "{W}/a-file"),
    cli("metaadv evaluate", "no checkpoint there", "evaluate", "{W}/nowhere"),
    cli("metaadv evaluate", "--eps 2", "evaluate", "{W}/train", "--eps", "2"),
    cli("metaadv evaluate", "--eps eight", "evaluate", "{W}/train", "--eps", "eight"),
    cli("metaadv evaluate", "--pgd-step-size 2/", "evaluate", "{W}/train", "--pgd-step-size", "2/"),
    cli("metaadv evaluate", "a Ray Tune trial folder (several checkpoints)", "evaluate", "{W}/tune/metaadv_trial_a_00000"),
    cli("metaadv evaluate", "a Ray Tune experiment folder", "evaluate", "{W}/tune"),
    cli("metaadv evaluate", "unknown --attacks", "evaluate", "{W}/train", "--attacks", "cw"),
    cli("metaadv evaluate", "--n 0", "evaluate", "{W}/train", "--n", "0"),
    cli("metaadv evaluate", "unknown --device", "evaluate", "{W}/train", "--device", "tpu"),
    # metaadv meta-evaluate.
    cli("metaadv meta-evaluate", "a training checkpoint", "meta-evaluate", "{W}/train"),
    cli("metaadv meta-evaluate", "--tasks 0", "meta-evaluate", "{W}/meta", "--tasks", "0"),
    cli("metaadv meta-evaluate", "--eps 3", "meta-evaluate", "{W}/meta", "--eps", "3"),
    cli("metaadv meta-evaluate", "--eps 0.1 8/0 (a bad fraction in a sweep)", "meta-evaluate", "{W}/meta",
        "--eps", "0.1", "8/0"),
    cli("metaadv meta-evaluate", "unknown --device", "meta-evaluate", "{W}/meta", "--device", "tpu"),
    cli("metaadv meta-evaluate", "unknown --support-attack", "meta-evaluate", "{W}/meta", "--support-attack", "rotate"),
    cli("metaadv meta-evaluate", "--attack-support with --support-attack unrolled", "meta-evaluate", "{W}/meta",
        "--attack-support", "--support-attack", "unrolled"),
    cli("metaadv meta-evaluate", "--autoattack-eps not among --eps", "meta-evaluate", "{W}/meta", "--eps", "0.1", "0.2",
        "--autoattack-eps", "0.3"),
    cli("metaadv meta-evaluate", "--pgd-restarts 0", "meta-evaluate", "{W}/meta", "--pgd-restarts", "0"),
    cli("metaadv meta-evaluate", "--eps 0.1 2 (one value of a sweep out of range)", "meta-evaluate", "{W}/meta",
        "--eps", "0.1", "2"),
    cli("metaadv meta-evaluate", "--per-task in a folder that does not exist", "meta-evaluate", "{W}/meta",
        "--per-task", "{W}/nowhere/tasks.csv"),
    # metaadv tune (each refused before Ray starts).
    cli("metaadv tune", "unknown experiment", "tune", "nope"),
    cli("metaadv tune", "no experiment named", "tune"),
    cli("metaadv tune", "--samples not a number", "tune", "pbt_pgd_at", "--samples", "x"),
    cli("metaadv tune", "unknown option", "tune", "pbt_pgd_at", "--bogus"),
    cli("metaadv tune", "unknown --loggers", "tune", "pbt_pgd_at", "--loggers", "wandb"),
    cli("metaadv tune", "--loggers with --resume", "tune", "pbt_pgd_at", "--loggers", "tensorboard", "--resume"),
    cli("metaadv study", "unknown --loggers", "study", "learned_vs_searched", "--size", "tiny", "--loggers", "wandb"),
    cli("metaadv study", "--reuse of a folder that holds no study", "study", "learned_vs_searched", "--size", "tiny",
        "--out", "{W}/reusing", "--reuse", "{W}/nowhere"),
    cli("metaadv analyze", "several folders without --out", "analyze", "{W}/train", "{W}/meta"),
    cli("metaadv tune", "--workers not a number", "tune", "pbt_pgd_at", "--workers", "two"),
    cli("metaadv tune", "--workers 0", "tune", "pbt_pgd_at", "--workers", "0"),
    cli("metaadv tune", "--gpus-per-trial with --workers", "tune", "pbt_pgd_at", "--workers", "2", "--gpus-per-trial", "1"),
    cli("metaadv tune", "experiment file missing", "tune", "{W}/missing.py"),
    cli("metaadv tune", "experiment file without EXPERIMENT", "tune", "{W}/noexp.py", files=[("noexp.py", "X = 1\n")]),
    cli("metaadv tune", "experiment file that raises", "tune", "{W}/raises.py",
        files=[("raises.py", "import os\nraise RuntimeError('boom')\n")]),
    cli("metaadv tune", "experiment file with a syntax error", "tune", "{W}/syntax.py", files=[("syntax.py", "def (\n")]),
    cli("metaadv tune", "experiment whose base config has a non-string key", "tune", "{W}/intkey_exp.py",
        files=[("intkey_exp.py", "from tune_experiments.pbt_pgd_at import EXPERIMENT as E\n"
                                  "EXPERIMENT = E.replace(base={**E.base, 1: 2})\n")]),
    # metaadv policy train (each refused before Ray starts).
    policy_train("--episodes 1", "--episodes=1"),
    policy_train("--parallel 0", "--parallel", "0"),
    policy_train("--episodes not a number", "--episodes", "many"),
    policy_train("--out holding a finished policy training", out="{W}/policy-train"),
    policy_train("--out holding a foreign folder (a training run)", out="{W}/train"),
    policy_train("--resume with nothing to resume", "--resume"),
    policy_train("every --policy-* grid empty", "--policy-eps", "--policy-step-ratio", "--policy-steps", "--policy-lr-mult",
                 "--policy-weight-decay", "--policy-adv-mix"),
    policy_train("--controller other than policy", "--controller", "schedule"),
    # Python API.
    api("metaadv.load_model", "a meta-learning checkpoint", lambda w: metaadv.load_model(w / "meta")),
    api("metaadv.load_model", "a policy file", lambda w: metaadv.load_model(w / "policy.pt")),
    api("metaadv.load_model", "no checkpoint there", lambda w: metaadv.load_model(w / "nowhere")),
    api("metaadv.load_dataset", "unknown data set", lambda w: metaadv.load_dataset("imagenet")),
    api("metaadv.load_dataset", "unknown split", lambda w: metaadv.load_dataset("digits", "holdout")),
    api("metaadv.load_dataset", "torchvision set without data_dir", lambda w: metaadv.load_dataset("mnist")),
    api("TrainConfig.from_dict", "a list where a mapping belongs", lambda w: TrainConfig.from_dict([("eps", 0.1)])),
    api("TrainConfig.from_dict", "a non-string key", lambda w: TrainConfig.from_dict({1: 2})),
    api("TrainConfig.from_dict", "`download: 'maybe'`", lambda w: TrainConfig.from_dict({"download": "maybe"})),
    api("TrainConfig.from_dict", "`steps: '10 steps'`", lambda w: TrainConfig.from_dict({"steps": "10 steps"})),
    api("TrainConfig", "lr_gamma=0", lambda w: TrainConfig(lr_gamma=0.0)),
    api("TrainConfig", "lr_milestones=(2.0,)", lambda w: TrainConfig(lr_milestones=(2.0,))),
    api("MetaConfig.from_dict", "None", lambda w: MetaConfig.from_dict(None)),
    api("MetaConfig.from_dict", "`first_order: 'perhaps'`", lambda w: MetaConfig.from_dict({"first_order": "perhaps"})),
    api("read_config_file", "an empty file", lambda w: read_config_file(w / "empty.yaml"), files=[("empty.yaml", "")]),
]


@dataclass
class Outcome:
    code: int | str  # exit status, or the exception's name for an API call
    err: str  # what the user saw (stderr, or the exception's message), world folder shown as W
    out_created: bool
    changed: list  # files of the world folder whose bytes changed


def _snapshot(world: Path) -> dict:
    return {p: p.read_bytes() for p in world.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A folder with a training checkpoint, a meta-learning checkpoint, a policy file and a plain file."""
    from metaadv.models import model_kwargs
    from metaadv.data import dataset_info
    from metaadv.training.run import TrainingRun

    w = tmp_path_factory.mktemp("world")
    config = TrainConfig.from_dict({"dataset": "digits", "rounds": 1, "steps_per_round": 1, "val_size": 8})
    TrainingRun(config).save(w / "train" / "checkpoint.pt")  # a real, untrained training checkpoint
    for r in range(2):  # a Ray Tune experiment folder: one trial, a checkpoint folder per round
        folder = w / "tune" / "metaadv_trial_a_00000" / f"checkpoint_{r:06d}"
        folder.mkdir(parents=True)
        (folder / "checkpoint.pt").write_bytes((w / "train" / "checkpoint.pt").read_bytes())
    # A meta-learning checkpoint as metaadv meta writes it (kind, config, arch, ...); only these
    # fields are read before the refusals under test, so the learner's state is left empty.
    save_checkpoint({"kind": "meta", "config": MetaConfig(dataset="digits").to_dict(), "arch": "digits-net",
                     "model_kwargs": model_kwargs(dataset_info("digits")), "learner": {}, "rows": [], "seconds": 0.0},
                    w / "meta" / "checkpoint.pt")
    save_checkpoint({"kind": "policy", "grids": {}, "state_dim": 1, "hidden": 1, "net": {}}, w / "policy.pt")
    # A finished policy training's folder, as far as the refusal reads it (its state file is there).
    save_checkpoint({"kind": "policy-meta", "rows": []}, w / "policy-train" / "meta_state.pt")
    (w / "policy-train" / "summary.json").write_text("{}\n")
    (w / "a-file").write_text("not a checkpoint\n")
    return w


def _run(case: Case, world: Path, index: int) -> Outcome:
    for name, text in case.files:
        (world / name).write_text(text)
    out = world / "runs" / f"case{index}"
    before = _snapshot(world)
    stdout, stderr = io.StringIO(), io.StringIO()
    if case.call is not None:
        try:
            case.call(world)
            code, err = "no error", ""
        except UserError as exc:
            code, err = "UserError", str(exc)
        except Exception as exc:  # reported, and failed by the test
            code, err = type(exc).__name__, str(exc)
    else:
        argv = [a.replace("{OUT}", str(out)).replace("{W}", str(world)) for a in case.argv]
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                code = main(argv)
            except SystemExit as exc:
                code = exc.code
            except Exception as exc:  # a traceback today: reported, and failed by the test
                code, stderr = type(exc).__name__, io.StringIO(f"{type(exc).__name__}: {exc}")
        err = stderr.getvalue()
    after = _snapshot(world)
    changed = sorted(str(p.relative_to(world)) for p in set(before) | set(after) if before.get(p) != after.get(p))
    return Outcome(code, err.strip().replace(str(out), "W/run").replace(str(world), "W"), out.exists(), changed)


@pytest.fixture(scope="module")
def outcomes(world) -> list[Outcome]:
    return [_run(case, world, i) for i, case in enumerate(CASES)]


@pytest.mark.parametrize("index", range(len(CASES)), ids=[f"{c.surface.split()[-1]}: {c.what}" for c in CASES])
def test_bad_input_gives_one_line_and_writes_nothing(index, outcomes):
    case, o = CASES[index], outcomes[index]
    if case.call is not None:
        assert o.code == "UserError", o
        assert len(o.err.splitlines()) == 1 and o.err, o
    else:
        assert o.code == 2, o
        assert len(o.err.splitlines()) == 1 and o.err.startswith("metaadv: error:"), o
    assert "Traceback" not in o.err
    assert not o.out_created, "a run folder was created"
    assert o.changed == [], f"files changed: {o.changed}"


def test_the_messages_say_what_to_do(outcomes):
    """Spot checks that the line names the thing and the way out, not only that it is one line."""
    said = {(c.surface, c.what): o.err for c, o in zip(CASES, outcomes)}
    assert "metaadv meta-evaluate" in said[("metaadv evaluate", "a meta-learning checkpoint")]
    assert "meta-learning run" in said[("metaadv.load_model", "a meta-learning checkpoint")]
    assert "metaadv meta-evaluate" in said[("metaadv.load_model", "a meta-learning checkpoint")]
    assert "lr_gamma must be > 0" in said[("metaadv train", "--lr-gamma 0")]
    assert "download expects a boolean" in said[("metaadv train", "config `download: maybe`")]
    assert "must hold a mapping" in said[("metaadv train", "config that is a list")]
    assert "is empty" in said[("metaadv train", "config file empty")]
    assert "line 2: RuntimeError: boom" in said[("metaadv tune", "experiment file that raises")]
    assert "finished policy training" in said[("metaadv policy train", "--out holding a finished policy training")]
    assert "not a policy training" in said[("metaadv policy train", "--out holding a foreign folder (a training run)")]
    assert "1.75 x --eps 0.6 = 1.05" in said[("metaadv train", "--controller las with --eps 0.6 (1.75 x 0.6 is above 1 for linf)")]
    assert "use pgd-at or trades" in said[("metaadv train", "--controller las with --method standard (no attack)")]
    assert "for now" in said[("metaadv train", "--controller las with --workers 2")]
    assert "--eps 'eight': give a finite number or a fraction, e.g. 0.03 or 8/255" in said[("metaadv evaluate", "--eps eight")]
    assert "checkpoints checkpoint_000000, checkpoint_000001; pass one of them (the last is W/tune/" in said[
        ("metaadv evaluate", "a Ray Tune trial folder (several checkpoints)")]
    assert "name the report's folder with --out" in said[("metaadv analyze", "several folders without --out")]


def render_table(outcomes: list[Outcome]) -> str:
    lines = [
        "# Bad input and what it gives",
        "",
        "Every input below is refused with one line and exit status 2 (`metaadv ...`), or a",
        "`UserError` with a one-line message (Python API), before a run folder is created and without",
        "touching any file already there. `W` stands for the folder the inputs live in; the `train` and",
        "`meta` cases also pass tiny sizes (`--dataset digits --epochs 1 ...`), left out here.",
        "",
        "Generated by `tests/test_bad_inputs.py`, which runs every case; regenerate with",
        "`METAADV_WRITE_DOCS=1 pytest tests/test_bad_inputs.py`.",
        "",
        "| # | where | bad input | what it gives |",
        "|---|---|---|---|",
    ]
    for i, (case, o) in enumerate(zip(CASES, outcomes), 1):
        given = " ".join(a for a in case.argv if a not in TINY and a not in META_TINY)  # the tiny sizes go unsaid
        given = given.replace("--out {OUT} --out", "--out").replace("{OUT}", "W/run").replace("{W}", "W")
        what = case.what + (f": {_code(given)}" if given else "")
        result = f"exit {o.code}: {_code(o.err)}" if case.call is None else f"{o.code}: {_code(o.err)}"
        lines.append(f"| {i} | {case.surface} | {_cell(what)} | {_cell(result)} |")
    return "\n".join(lines) + "\n"


def _code(text: str) -> str:
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def test_docs_errors_table_is_current(outcomes):
    table = render_table(outcomes)
    if os.environ.get("METAADV_WRITE_DOCS") == "1":
        DOC.write_text(table)
    assert DOC.is_file() and DOC.read_text() == table, (
        "docs/errors.md is out of date; regenerate it with: METAADV_WRITE_DOCS=1 pytest tests/test_bad_inputs.py")


def test_at_least_25_cases_across_every_surface():
    surfaces = {c.surface for c in CASES}
    assert len(CASES) >= 25
    assert {"metaadv train", "metaadv meta", "metaadv tune", "metaadv evaluate", "metaadv meta-evaluate",
            "metaadv.load_model", "metaadv.load_dataset"} <= surfaces


@pytest.mark.parametrize("value, expected", [(True, True), (False, False), ("yes", True), ("No", False), ("true", True),
                                             ("0", False), (1, True), (0, False)])
def test_booleans_read_from_config_files(value, expected):
    assert coerce("download", False, value) is expected


@pytest.mark.parametrize("value", ["maybe", "", 2, -1, 0.5, None, [True]])
def test_ambiguous_booleans_are_refused(value):
    with pytest.raises(UserError, match="download expects a boolean"):
        coerce("download", False, value)


def test_good_values_still_pass():
    c = TrainConfig.from_dict({"lr-gamma": 0.5, "lr_milestones": [0.5, 1.0], "download": "yes", "steps": 3.0,
                               "vat_weight": 0, "co_gap": 0.0, "momentum": 0.0, "data_dir": None})
    assert (c.lr_gamma, c.lr_milestones, c.download, c.steps, c.data_dir) == (0.5, (0.5, 1.0), True, 3, "")
    m = MetaConfig.from_dict({"first_order": "true", "download": 0})
    assert m.first_order is True and m.download is False
