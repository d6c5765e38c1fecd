"""Multi-node: storage the nodes do not share is refused before any trial starts; a search spreads
its trials over the nodes of a local two-node cluster (``ray.cluster_utils.Cluster``).

Local test nodes share one disk, so the refusal is tested with the per-node read faked; the real
check (a token written by the driver, read back by a task on each node) runs on the two-node
cluster and passes there, as it should.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

ray = pytest.importorskip("ray")

from metaadv.distributed import storage  # noqa: E402
from metaadv.errors import UserError  # noqa: E402
from metaadv.tune.experiment import Experiment, Size  # noqa: E402
from metaadv.tune.kinds import RunKind, build_train_run, restore_train_run  # noqa: E402
from metaadv.tune.runner import RunOptions, run_experiment  # noqa: E402
from metaadv.tune.space import Grid  # noqa: E402

TINY = {"method": "pgd-at", "dataset": "digits", "steps_per_round": 2, "val_size": 50, "val_pgd_steps": 2,
        "device": "cpu", "eps_ramp_rounds": 0, "rounds": 1}
NODES = {"node-a": "10.0.0.1", "node-b": "10.0.0.2"}
REAL_READ = storage.read_token_on_nodes


def _blind_node_b(path: str, name: str, node_ids: list[str]) -> dict[str, str]:
    """Node b sees no token: what a folder local to the driver's node looks like from elsewhere."""
    token = storage._read_token(path, name)
    return {n: ("" if n == "node-b" else token) for n in node_ids}


def _every_node_reads(path: str, name: str, node_ids: list[str]) -> dict[str, str]:
    token = storage._read_token(path, name)
    return {n: token for n in node_ids}


# -- the check, faked nodes (no Ray) ------------------------------------------------------------


def test_storage_a_node_cannot_read_is_refused_in_one_line_and_leaves_nothing(monkeypatch, tmp_path):
    monkeypatch.setattr(storage, "alive_nodes", lambda: dict(NODES))
    where = tmp_path / "results"
    with pytest.raises(UserError) as err:
        storage.check_shared_storage(str(where), read_on_nodes=_blind_node_b)
    message = str(err.value)
    assert "not shared" in message and "10.0.0.2" in message and "10.0.0.1" not in message
    assert "s3://" in message and "\n" not in message
    assert not where.exists()  # the token and the folder made for it are gone


def test_storage_every_node_reads_passes(monkeypatch, tmp_path):
    monkeypatch.setattr(storage, "alive_nodes", lambda: dict(NODES))
    storage.check_shared_storage(str(tmp_path), read_on_nodes=_every_node_reads)
    assert not list(tmp_path.glob(f"{storage.TOKEN_PREFIX}*"))


def test_one_node_is_not_checked(monkeypatch, tmp_path):
    monkeypatch.setattr(storage, "alive_nodes", lambda: {"node-a": "10.0.0.1"})
    storage.check_shared_storage(str(tmp_path / "x"), read_on_nodes=_blind_node_b)  # would refuse if it looked
    assert not (tmp_path / "x").exists()


def test_an_unreadable_uri_counts_as_not_shared(tmp_path):
    assert storage._read_token(f"file://{tmp_path}/nowhere", "token") == ""


# -- a local two-node cluster -------------------------------------------------------------------


def _build_on_node(values: dict, **placement):
    """A training run whose rows also say which node trained them."""
    run = build_train_run(values, **placement)
    step = run.step

    def step_with_node():
        return {**step(), "node_id": ray.get_runtime_context().get_node_id()}

    run.step = step_with_node
    return run


NODE_KIND = {"train": RunKind(_build_on_node, restore_train_run, placed=True)}


@pytest.fixture(scope="module")
def two_nodes():
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if ray.is_initialized():
        pytest.skip("another Ray is initialised in this process")
    temp = tempfile.mkdtemp(prefix="rc", dir="/tmp")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False, "temp_dir": temp})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        cluster.wait_for_nodes()
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def _search(name: str) -> Experiment:
    size = Size(2, dict(TINY))
    return Experiment(name=name, description=name, sizes={"smoke": size, "full": size}, threat_eps=0.2,
                      space={"eps": Grid(0.1, 0.2)})


@pytest.mark.slow
def test_local_storage_on_a_two_node_cluster_is_refused_before_any_trial(two_nodes, tmp_path, monkeypatch):
    monkeypatch.setattr(storage, "read_token_on_nodes", _blind_node_b_real)
    with pytest.raises(UserError, match="not shared by the cluster's 2 nodes"):
        run_experiment(_search("refused"), RunOptions(size="smoke", storage=str(tmp_path / "res"), verbose=0,
                                                      address=two_nodes.address))
    assert not (tmp_path / "res").exists()


def _blind_node_b_real(path: str, name: str, node_ids: list[str], timeout_s: float = 120.0) -> dict[str, str]:
    """The real per-node read, then the second node made blind (local nodes share one disk)."""
    seen = REAL_READ(path, name, node_ids, timeout_s)
    assert all(seen.values()), "the real check failed on local nodes that share a disk"
    return {n: (text if i == 0 else "") for i, (n, text) in enumerate(seen.items())}


@pytest.mark.slow
def test_a_search_on_two_nodes_runs_trials_on_both(two_nodes, tmp_path):
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    grid = run_experiment(_search("spread"), RunOptions(size="smoke", storage=str(tmp_path), verbose=0,
                                                        cpus_per_trial=1.0), extra_kinds=NODE_KIND)
    assert not grid.errors
    used = {r.metrics["node_id"] for r in grid}
    assert used == {n["NodeID"] for n in ray.nodes() if n["Alive"]}, "the trials did not land on both nodes"
