"""A real two-node Ray cluster on this machine: sweeper launched with --address, shared storage, token auth.

Both nodes are raylets started by `ray.cluster_utils.Cluster` (in a child process of this test, which
removes them by their handles at the end); each offers 1 CPU, the head also the trial-driver resource (as cluster.yaml's
head does). The sweep runs in its own process, as `ray job submit` would run it on a cluster.
"""

import json
import os
import secrets
import subprocess
import sys

import polars as pl
import pytest
from grids import SMOKE

pytestmark = [pytest.mark.ray, pytest.mark.timeout(420)]

# The smoke grid with one cell of two Train workers: on two 1-CPU nodes they must span both.
SPACE = SMOKE.replace("name: smoke", "name: twonode").replace("micro_batch: 4", "micro_batch: 2") + """\
overrides:
  - methods: [lora]
    scales: [s]
    set: {resources.workers: 2}
"""


# The cluster lives in a process of its own, started with the token in its environment (Ray reads
# RAY_AUTH_MODE once per process); it prints the head's address and node ids, then holds the nodes
# until its stdin closes, and removes them by their process handles.
CLUSTER = """
import json, sys
import ray
from ray.cluster_utils import Cluster
cluster = Cluster(initialize_head=True, head_node_args={
    "num_cpus": 1, "resources": {sys.argv[1]: 1000}, "include_dashboard": True})
cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
ray.init(address=cluster.address)
nodes = [node["NodeID"] for node in ray.nodes() if node["Alive"]]
ray.shutdown()
print(json.dumps({"address": cluster.address, "nodes": nodes}), flush=True)
sys.stdin.read()
cluster.shutdown()
"""


@pytest.fixture
def two_nodes():
    from sweeper.backend.cluster import DRIVER_RESOURCE

    # Token authentication stays on: both nodes and the sweep's driver share this token.
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    holder = subprocess.Popen([sys.executable, "-c", CLUSTER, DRIVER_RESOURCE], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        info = json.loads(holder.stdout.readline())
        yield {**info, "env": env}
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)


def test_a_sweep_spans_two_nodes_on_shared_storage(two_nodes, write_space, smoke_ladder, tmp_path):
    space = write_space(SPACE)
    shared = tmp_path / "shared-storage"  # stands in for S3 / NFS: every node reaches it
    out = tmp_path / "sweep"
    launch = [sys.executable, "-m", "sweeper", "launch", "grid", "--space", str(space), "--out", str(out),
              "--address", two_nodes["address"]]
    refused = subprocess.run(launch, capture_output=True, text=True, timeout=120, env=two_nodes["env"])
    assert refused.returncode == 2 and "the cluster has 2 nodes" in refused.stderr and not out.exists()
    result = subprocess.run(
        [*launch, "--storage", str(shared), "--no-evaluate", "--no-report"],
        capture_output=True, text=True, timeout=360, env=two_nodes["env"],
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = pl.read_parquet(out / "cells.parquet")
    assert table.height == 4 and set(table["status"]) == {"done"}
    nodes_of = {row["trial_id"]: json.loads(row["hardware"])["ray_nodes"] for row in table.iter_rows(named=True)}
    cluster_nodes = set(two_nodes["nodes"])
    assert len(cluster_nodes) == 2
    assert {node for nodes in nodes_of.values() for node in nodes} == cluster_nodes  # trials on both nodes
    spanning = table.filter((pl.col("method") == "lora") & (pl.col("scale") == "s"))["trial_id"].item()
    assert len(nodes_of[spanning]) == 2 and set(nodes_of[spanning]) == cluster_nodes  # one trial's workers on both
    assert all(str(shared) in uri for uri in table["checkpoint"])  # tuned weights on the shared storage
