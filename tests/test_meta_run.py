"""The run contract: metrics rows, files, resume equality, meta-test, and bad input at the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from metaadv.checkpoint import read_checkpoint, save_checkpoint
from metaadv.cli import main
from metaadv.errors import UserError
from metaadv.meta import MetaConfig, mean_ci95, meta_test, run_meta
from metaadv.training.metrics import read_metrics_csv


TINY = dict(dataset="digits", ways=3, shots=1, queries=2, meta_batch=2, rounds=2, steps_per_round=2,
            inner_steps=1, val_tasks=2, val_pgd_steps=2, device="cpu")


class _Interrupt(Exception):
    pass


def _stop_after_first_round(row, run):
    if row["round"] == 1:
        raise _Interrupt


@pytest.mark.parametrize("method", ["adml", "reptile", "aq"])
def test_resume_gives_the_uninterrupted_rows(tmp_path, method):
    config = MetaConfig.from_dict({**TINY, "method": method, "attack": "pgd", "attack_steps": 2})
    straight = run_meta(config, tmp_path / "a")
    with pytest.raises(_Interrupt):
        run_meta(config, tmp_path / "b", on_row=_stop_after_first_round)
    assert len(read_metrics_csv(tmp_path / "b" / "metrics.csv")) == 1
    resumed = run_meta(config, tmp_path / "b", resume=True)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "cost/seconds"} for r in rows]
    assert strip(resumed.rows) == strip(straight.rows)
    assert strip(read_metrics_csv(tmp_path / "b" / "metrics.csv")) == strip(read_metrics_csv(tmp_path / "a" / "metrics.csv"))
    for p, q in zip(straight.learner.model.parameters(), resumed.learner.model.parameters()):
        assert torch.equal(p, q)


def test_row_contract_files_and_cost(tmp_path):
    config = MetaConfig.from_dict({**TINY, "method": "maml", "rounds": 1})
    run_meta(config, tmp_path)
    (row,) = read_metrics_csv(tmp_path / "metrics.csv")
    for key in ("round", "train/loss", "val/clean_acc", "val/robust_acc", "hp/inner_lr", "hp/inner_steps",
                "hp/meta_lr", "hp/eps", "hp/beta1", "hp/beta2", "cost/grad_evals", "cost/seconds"):
        assert key in row
    # MAML: per task, inner_steps passes over the support plus one over the query.
    assert row["cost/grad_evals"] == 2 * 2 * (1 * 3 * 1 + 3 * 2)
    assert json.loads((tmp_path / "config.json").read_text()) == config.to_dict()
    state = read_checkpoint(tmp_path)
    assert state["kind"] == "meta" and state["model_kwargs"]["num_classes"] == 3


def test_budget_stops_meta_training_mid_round_at_equal_cost(tmp_path):
    # MAML here costs 2 tasks x (1 x 3 support + 6 query) = 18 passes per outer step: 3 steps pass 50.
    config = MetaConfig.from_dict({**TINY, "method": "maml", "rounds": 10, "budget_grad_evals": 50})
    run = run_meta(config, tmp_path)
    assert [r["step"] for r in run.rows] == [2, 3] and run.rows[-1]["cost/grad_evals"] == 54
    with pytest.raises(UserError, match="budget_grad_evals must be >= 0"):
        MetaConfig.from_dict({"budget_grad_evals": -1})


def test_meta_test_json_and_intervals(tmp_path, capsys):
    run_meta(MetaConfig.from_dict({**TINY, "rounds": 1, "steps_per_round": 1}), tmp_path)
    assert main(["meta-evaluate", str(tmp_path), "--tasks", "5", "--pgd-steps", "2", "--device", "cpu", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["tasks"] == 5 and 0 <= r["robust_acc"] <= r["clean_acc"] <= 1 and r["clean_ci95"] >= 0
    again = meta_test(tmp_path, tasks=5, pgd_steps=2, device="cpu")
    assert again["clean_acc"] == r["clean_acc"] and again["robust_acc"] == r["robust_acc"]  # seeded tasks
    assert main(["meta-evaluate", str(tmp_path), "--tasks", "3", "--pgd-steps", "1", "--attack-support"]) == 0
    assert "robust accuracy" in capsys.readouterr().out


def test_mean_ci95_by_hand():
    mean, ci = mean_ci95([0.0, 1.0, 1.0, 0.0])
    assert mean == 0.5 and ci == pytest.approx(1.96 * 0.5 / 2)


def test_config_rejects_unknown_keys_and_reads_files(tmp_path):
    with pytest.raises(UserError, match="unknown config key"):
        MetaConfig.from_dict({"wayz": 3})
    assert MetaConfig.from_dict({"method": "fomaml"}).first_order
    with pytest.raises(UserError, match="first-order by definition"):
        MetaConfig.from_dict({"method": "fomaml", "first_order": False})
    f = tmp_path / "c.yaml"
    f.write_text("method: reptile\nways: 4\n")
    out = tmp_path / "run"
    assert main(["meta", "--config", str(f), "--out", str(out), "--ways", "2", "--quiet",
                 *sum(([f"--{k.replace('_', '-')}", str(v)] for k, v in TINY.items() if k != "ways"), [])]) == 0
    stored = json.loads((out / "config.json").read_text())
    assert stored["method"] == "reptile" and stored["ways"] == 2  # flags override the file


BAD_INPUT = [
    (["--ways", "7"], "ways=7"),  # digits 0-5 are the meta-train classes
    (["--shots", "15", "--queries", "10"], "shots + queries = 25"),  # meta-validation keeps ~18 images a class
    (["--method", "protonet"], "unknown method 'protonet'"),
    (["--eps", "1.5"], "eps must be in [0, 1]"),
    (["--arch", "vgg"], "unknown arch"),
]


@pytest.mark.parametrize("flags,message", BAD_INPUT)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, flags, message):
    out = tmp_path / "run"
    rc = main(["meta", "--out", str(out), "--dataset", "digits", *flags])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("metaadv: error: ") and err.count("\n") == 1 and message in err
    assert not out.exists()


def test_existing_run_needs_resume_and_wrong_checkpoint_kind(tmp_path, capsys):
    run_meta(MetaConfig.from_dict({**TINY, "rounds": 1, "steps_per_round": 1}), tmp_path / "run")
    assert main(["meta", "--out", str(tmp_path / "run"), "--dataset", "digits"]) == 2
    assert "add --resume" in capsys.readouterr().err
    save_checkpoint({"kind": "train"}, tmp_path / "train" / "checkpoint.pt")
    assert main(["meta-evaluate", str(tmp_path / "train")]) == 2
    err = capsys.readouterr().err
    assert "not a meta-learning run" in err and err.count("\n") == 1
