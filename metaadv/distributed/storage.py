"""Refuse storage that the nodes of a multi-node Ray cluster do not share, before anything starts.

Ray writes every checkpoint to ``storage_path`` from whichever node the worker or trial runs
on, and reads it back on whichever node a retry, a resume or a PBT exploit lands: a folder that
only the driver's node sees fails at the first checkpoint, minutes or hours in. The path's shape
cannot tell: an NFS mount has no ``://`` and ``file:///tmp`` is not shared. So the check is
real: the driver writes a token file under the storage, and a task pinned to every alive node
reads it back. One node (and so every local cluster, whose test nodes share one disk) passes
without a look.
"""

from __future__ import annotations

import os
import uuid
import warnings
from typing import Callable

from ..errors import UserError

__all__ = ["check_shared_storage", "read_token_on_nodes"]

TOKEN_PREFIX = ".metaadv-storage-check-"


def _filesystem(storage: str):
    import pyarrow.fs

    if "://" in storage:
        return pyarrow.fs.FileSystem.from_uri(storage)
    return pyarrow.fs.LocalFileSystem(), os.path.abspath(os.path.expanduser(storage))


def _read_token(storage: str, name: str) -> str:
    """The token file's text as this process sees it, or ``""`` when it cannot read it."""
    try:
        fs, base = _filesystem(storage)
        with fs.open_input_stream(f"{base.rstrip('/')}/{name}") as f:
            return f.read().decode()
    except Exception:  # not there, no access, no credentials: all mean "not shared with this node"
        return ""


def read_token_on_nodes(storage: str, name: str, node_ids: list[str], timeout_s: float = 120.0) -> dict[str, str]:
    """``{node_id: token text read there}``, one zero-CPU task pinned to each node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    reader = ray.remote(num_cpus=0)(_read_token)
    refs = {node: reader.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(storage, name)
            for node in node_ids}
    try:
        return dict(zip(refs, ray.get(list(refs.values()), timeout=timeout_s)))
    except ray.exceptions.GetTimeoutError:
        raise UserError(f"the storage check did not hear back from every node within {timeout_s:.0f} s; "
                        "is the cluster healthy?") from None


def alive_nodes() -> dict[str, str]:
    """``{node_id: address}`` of the cluster's alive nodes (Ray must be initialised)."""
    import ray

    return {n["NodeID"]: n.get("NodeManagerAddress", "?") for n in ray.nodes() if n.get("Alive")}


def check_shared_storage(storage: str, *, flag: str = "--storage",
                         read_on_nodes: Callable[[str, str, list[str]], dict[str, str]] | None = None) -> None:
    """On a cluster of more than one node, raise :class:`UserError` unless every node reads what
    the driver wrote under ``storage`` (a folder or a URI). ``read_on_nodes`` stands in for
    :func:`read_token_on_nodes` in tests (local test nodes share one disk)."""
    nodes = alive_nodes()
    if len(nodes) <= 1:
        return
    name = f"{TOKEN_PREFIX}{uuid.uuid4().hex}"
    token = uuid.uuid4().hex
    import pyarrow.fs

    fs, base = _filesystem(storage)
    path = f"{base.rstrip('/')}/{name}"
    made = fs.get_file_info(base).type == pyarrow.fs.FileType.NotFound
    try:
        fs.create_dir(base, recursive=True)
        with fs.open_output_stream(path) as f:
            f.write(token.encode())
    except Exception as exc:
        raise UserError(f"cannot write to {flag} {storage!r}: {str(exc).splitlines()[0]}") from None
    try:
        seen = (read_on_nodes or read_token_on_nodes)(storage, name, list(nodes))
    finally:
        try:
            fs.delete_file(path)
            if made:  # a refused run leaves nothing behind
                fs.delete_dir(base)
        except Exception as exc:  # the check's verdict stands; the leftover token is only litter
            warnings.warn(f"could not remove the storage check's token {path}: {str(exc).splitlines()[0]}")
    blind = [nodes[n] for n, text in seen.items() if text != token]
    if blind:
        raise UserError(f"{flag} {storage!r} is not shared by the cluster's {len(nodes)} nodes ({', '.join(sorted(blind))} "
                        "cannot read what this driver wrote there); pass a shared filesystem (NFS) or a URI such as "
                        "s3://bucket/path")
