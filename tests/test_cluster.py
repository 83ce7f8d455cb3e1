"""cluster.yaml: Ray's own validation offline + sweeper's checks; node types; the fit check."""

import copy
import re

import pytest

from sweeper.backend.cluster import (
    GPU_MEMORY_GIB,
    check_cells_fit,
    live_node_types,
    load_cluster,
    node_types_of,
    validate_cluster,
)
from sweeper.core.errors import UserError
from sweeper.core.paths import PROJECT_ROOT
from sweeper.memory import MemoryEstimate, estimate_memory
from sweeper.schema import Cell, DataConfig, EarlyStopping, Recipe, Resources, Search

CLUSTER_YAML = PROJECT_ROOT / "cluster.yaml"
AUTH_AND_STORAGE = ["--env=RAY_AUTH_MODE=token", "--env=SWEEPER_STORAGE=s3://bucket/sweeps"]


@pytest.fixture
def shipped() -> dict:
    return load_cluster(CLUSTER_YAML)


def refused(config: dict, *fragments: str) -> str:
    """Validate, expecting a one-line UserError that names the file or config and contains `fragments`."""
    with pytest.raises(UserError) as caught:
        validate_cluster(config)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("cluster config: ")
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_shipped_cluster_yaml_validates_offline():
    spec = validate_cluster(CLUSTER_YAML)
    assert spec.source == str(CLUSTER_YAML)
    assert spec.multi_node and spec.storage_path.startswith("s3://")
    assert spec.config["cluster_synced_files"] == []  # Ray's AWS defaults were filled in
    types = {node.name: node for node in spec.node_types}
    head = types["head"]
    assert head.head and head.gpus == 0 and head.max_workers == 0
    assert spec.config["available_node_types"]["head"]["resources"]["sweeper_driver"] > 0
    workers = [node for node in spec.node_types if not node.head]
    assert workers and all(node.min_workers == 0 < node.max_workers for node in workers)
    assert {node.accelerator for node in workers} == {"H100-80GB", "A100-80GB", "L40S-48GB"}
    assert types["gpu-8x-a100"].gpus == 8 and types["gpu-8x-a100"].gpu_memory_gib == 80.0
    assert types["gpu-1x-l40s"].cpus == 8


def test_errors_name_the_file(tmp_path):
    bad = tmp_path / "cluster.yaml"
    bad.write_text("cluster_name: x\nprovider: {type: aws\n")
    with pytest.raises(UserError, match=rf"^{re.escape(str(bad))}: malformed YAML at line \d+"):
        validate_cluster(bad)
    with pytest.raises(UserError, match="file not found"):
        validate_cluster(tmp_path / "missing.yaml")
    bad.write_text((CLUSTER_YAML.read_text()) + "\nbogus: 1\n")
    with pytest.raises(UserError, match=rf"^{re.escape(str(bad))}: unknown key 'bogus'"):
        validate_cluster(bad)


def test_unknown_keys_are_refused(shipped):
    top = copy.deepcopy(shipped)
    top["bogus"] = 1
    refused(top, "unknown key 'bogus'", "expected one of:", "available_node_types")

    in_node_type = copy.deepcopy(shipped)
    in_node_type["available_node_types"]["gpu-8x-a100"]["gpus"] = 8
    refused(in_node_type, "unknown key 'gpus' in available_node_types.gpu-8x-a100", "resources")

    misspelt_region = copy.deepcopy(shipped)
    misspelt_region["provider"]["regoin"] = "eu-west-1"
    refused(misspelt_region, "unknown key 'regoin' in provider", "region")


def test_credentials_in_the_file_are_refused(shipped):
    shipped["provider"]["aws_credentials"] = {"aws_access_key_id": "x", "aws_secret_access_key": "y"}
    refused(shipped, "provider.aws_credentials", "no credentials")


def test_ray_schema_and_consistency_errors_name_the_field(shipped):
    wrong_type = copy.deepcopy(shipped)
    wrong_type["max_workers"] = "many"
    refused(wrong_type, "max_workers: 'many' is not of type 'integer'")

    unknown_head = copy.deepcopy(shipped)
    unknown_head["head_node_type"] = "nowhere"
    refused(unknown_head, "head_node_type: ")

    unknown_provider = copy.deepcopy(shipped)
    unknown_provider["provider"]["type"] = "nimbus"
    refused(unknown_provider, "provider.type: ", "nimbus")


def test_a_head_with_gpus_is_refused(shipped):
    declared = copy.deepcopy(shipped)
    declared["available_node_types"]["head"]["resources"]["GPU"] = 1
    refused(declared, "available_node_types.head: resources.GPU", "head without GPUs")

    gpu_instance = copy.deepcopy(shipped)
    gpu_instance["available_node_types"]["head"]["node_config"]["InstanceType"] = "p4de.24xlarge"
    refused(gpu_instance, "node_config.InstanceType (p4de.24xlarge has GPUs)")

    gpu_instance["available_node_types"]["head"]["resources"]["GPU"] = 0
    validate_cluster(gpu_instance)  # GPUs hidden from Ray: no training lands there


def test_the_head_must_offer_the_driver_resource(shipped):
    del shipped["available_node_types"]["head"]["resources"]["sweeper_driver"]
    refused(shipped, "available_node_types.head.resources.sweeper_driver")


def test_a_local_storage_path_on_a_multi_node_cluster_is_refused(shipped):
    shipped["docker"]["run_options"] = ["--env=RAY_AUTH_MODE=token", "-e SWEEPER_STORAGE=/mnt/results"]
    refused(shipped, "SWEEPER_STORAGE", "'/mnt/results'", "s3://")
    with pytest.raises(UserError, match="file:///mnt/results"):
        validate_cluster(shipped, storage_path="file:///mnt/results")
    assert validate_cluster(shipped, storage_path="gs://bucket/x").storage_path == "gs://bucket/x"

    shipped["max_workers"] = 0  # a single node can keep its results on its own disk
    assert validate_cluster(shipped).storage_path == "/mnt/results"


def test_a_multi_node_cluster_needs_storage(shipped):
    shipped["docker"]["run_options"] = ["--env=RAY_AUTH_MODE=token"]
    refused(shipped, "docker.run_options", "SWEEPER_STORAGE=s3://")


def test_min_above_max_is_refused(shipped):
    shipped["available_node_types"]["gpu-8x-h100"]["min_workers"] = 3
    refused(shipped, "available_node_types.gpu-8x-h100: min_workers (3) must be at most max_workers (2)")


def test_gpu_node_types_must_have_gpus(shipped):
    hidden = copy.deepcopy(shipped)
    hidden["available_node_types"]["gpu-8x-a100"]["resources"]["GPU"] = 0
    refused(hidden, "available_node_types.gpu-8x-a100: resources.GPU", "p4de.24xlarge has 8 GPU(s)")

    memory_only = copy.deepcopy(shipped)
    memory_only["available_node_types"]["gpu-1x-l40s"] = {
        "resources": {"CPU": 8, "sweeper_gpu_memory_gib": 48}, "node_config": {"InstanceType": "m6i.2xlarge"},
        "min_workers": 0, "max_workers": 2,
    }
    refused(memory_only, "available_node_types.gpu-1x-l40s: resources.GPU", "without GPUs")

    too_many = copy.deepcopy(shipped)
    too_many["available_node_types"]["gpu-1x-l40s"]["resources"]["GPU"] = 4
    refused(too_many, "g6e.2xlarge has 1 GPU(s), not 4")


def test_gpu_memory_of_unknown_instance_types_must_be_declared(shipped):
    node = shipped["available_node_types"]["gpu-1x-l40s"]
    node["node_config"]["InstanceType"] = "x9.metal"
    node["resources"] = {"CPU": 8, "GPU": 1}
    refused(shipped, "resources.sweeper_gpu_memory_gib", "'x9.metal'")

    node["resources"]["sweeper_gpu_memory_gib"] = 40
    types = {n.name: n for n in validate_cluster(shipped).node_types}
    assert types["gpu-1x-l40s"].gpu_memory_gib == 40 and types["gpu-1x-l40s"].gpus == 1


def test_token_auth_must_stay_on(shipped):
    off = copy.deepcopy(shipped)
    off["docker"]["run_options"] = ["--env=SWEEPER_STORAGE=s3://bucket/sweeps"]
    refused(off, "RAY_AUTH_MODE=token", "got nothing")

    disabled = copy.deepcopy(shipped)
    disabled["docker"]["run_options"] = ["--env RAY_AUTH_MODE=disabled", "--env=SWEEPER_STORAGE=s3://b/x"]
    refused(disabled, "got disabled")

    workers_only_off = copy.deepcopy(shipped)
    workers_only_off["docker"]["run_options"] = ["--env=SWEEPER_STORAGE=s3://b/x"]
    workers_only_off["docker"]["head_run_options"] = ["--env=RAY_AUTH_MODE=token"]
    refused(workers_only_off, "worker containers")


@pytest.mark.parametrize("option", ["--dashboard-host=0.0.0.0", "--dashboard-host 0.0.0.0", "--dashboard-host=10.0.0.5"])
def test_a_public_dashboard_is_refused(shipped, option):
    public = copy.deepcopy(shipped)
    public["head_start_ray_commands"] = ["ray stop", f"ulimit -n 65536; ray start --head --port=6379 {option}"]
    refused(public, "head_start_ray_commands", "--dashboard-host=", "expected 127.0.0.1")


def test_the_shipped_dashboard_is_on_the_loopback_and_its_roles_are_narrow():
    spec = validate_cluster(CLUSTER_YAML)
    assert "--dashboard-host=127.0.0.1" in " ".join(spec.config["head_start_ray_commands"])
    assert spec.warnings == ()


def test_the_launchers_default_role_is_a_warning(shipped):
    broad = copy.deepcopy(shipped)
    del broad["available_node_types"]["head"]["node_config"]["IamInstanceProfile"]
    broad["available_node_types"]["gpu-1x-l40s"]["node_config"]["IamInstanceProfile"] = {"Name": "ray-autoscaler-v1"}
    warnings = validate_cluster(broad).warnings
    assert len(warnings) == 2
    assert "available_node_types.head.node_config: no IamInstanceProfile" in warnings[0]
    assert "available_node_types.gpu-1x-l40s.node_config: IamInstanceProfile ray-autoscaler-v1" in warnings[1]


def test_cluster_check_prints_the_role_warning(run_cli, tmp_path, shipped):
    import yaml

    broad = copy.deepcopy(shipped)
    broad["available_node_types"]["gpu-1x-l40s"]["node_config"]["IamInstanceProfile"] = {"Name": "ray-autoscaler-v1"}
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(broad))
    code, _, err = run_cli("cluster", "check", str(path))
    assert code == 0 and err.startswith("warning: ") and "ray-autoscaler-v1" in err


def test_commands_must_be_explicit(shipped):
    del shipped["worker_setup_commands"]
    refused(shipped, "worker_setup_commands: expected an explicit list", "nightly")


def test_the_image_must_carry_the_installed_ray(shipped):
    import ray

    shipped["docker"]["worker_image"] = "rayproject/ray:2.9.0-py311-gpu"
    refused(shipped, "docker.worker_image", f"Ray {ray.__version__}", "2.9.0")
    shipped["docker"]["worker_image"] = f"rayproject/ray:{ray.__version__}"
    validate_cluster(shipped)


def test_an_on_prem_cluster_validates_without_node_types():
    config = {
        "cluster_name": "onprem",
        "provider": {"type": "local", "head_ip": "10.0.0.1", "worker_ips": ["10.0.0.2", "10.0.0.3"]},
        "auth": {"ssh_user": "me"},
        "docker": {"image": "rayproject/ray:2.60.0-py311-gpu", "container_name": "ray",
                   "run_options": AUTH_AND_STORAGE},
        "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
        "head_start_ray_commands": ["ray stop", "ray start --head --resources='{\"sweeper_driver\": 1000}'"],
        "worker_start_ray_commands": ["ray stop", "ray start --address=$RAY_HEAD_IP:6379"],
    }
    spec = validate_cluster(config)
    assert spec.multi_node and spec.node_types == ()
    config["head_start_ray_commands"] = ["ray start --head"]
    refused(config, "head_start_ray_commands", "sweeper_driver")


# -- the fit check -------------------------------------------------------------------------------


def cell(method="fft", scale="3b", workers=1, gpus=1.0, cpus=8.0, **recipe) -> Cell:
    return Cell(
        space="test", ladder="starcoderbase", scale=scale, method=method,
        method_config={"r": 8, "lora_dropout": 0.05, "target_modules": ["c_attn", "c_proj"]} if method == "lora"
        else {},
        data=DataConfig(seq_len=2048), recipe=Recipe(micro_batch=4, global_batch=32, **recipe), search=Search(),
        early_stopping=EarlyStopping(),
        resources=Resources(workers=workers, gpus_per_worker=gpus, cpus_per_worker=cpus),
    )


def estimate(total_gib: float, partitioned_gib: float = 0.0, ranks: int = 1) -> MemoryEstimate:
    return MemoryEstimate(weights_gib=total_gib, gradients_gib=0, optimizer_gib=0, activations_gib=0,
                          buffers_gib=0, ranks=ranks, partitioned_gib=partitioned_gib)


def test_a_cell_that_fits_no_node_type_is_named():
    types = validate_cluster(CLUSTER_YAML).node_types
    small, huge = cell(scale="1b"), cell(scale="15b")
    plan = {small.id: estimate(30.0), huge.id: estimate(261.3)}
    with pytest.raises(UserError) as caught:
        check_cells_fit([small, huge], plan, types)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"cell fft/15b ({huge.id}) fits no node type: it needs 1 worker(s) of 1 GPU")
    assert "261.3 GiB per GPU" in message and "'gpu-8x-a100' has 8 x A100-80GB with 72.0 of 80.0 GiB" in message
    check_cells_fit([small], plan, types)


def test_each_worker_must_fit_one_node_and_workers_may_span_nodes():
    types = validate_cluster(CLUSTER_YAML).node_types
    usable_a100 = 0.9 * GPU_MEMORY_GIB["A100-80GB"]
    nine_gpu_worker = cell(workers=1, gpus=9, cpus=1)  # no node type has 9 GPUs
    with pytest.raises(UserError, match="1 worker\\(s\\) of 9 GPU"):
        check_cells_fit([nine_gpu_worker], {nine_gpu_worker.id: estimate(10.0)}, types)
    sixteen_workers = cell(workers=16, gpus=1, cpus=1)  # two 8-GPU nodes hold them (Ray Train spans nodes)
    check_cells_fit([sixteen_workers], {sixteen_workers.id: estimate(10.0)}, types)
    too_many = cell(workers=10_000, gpus=1, cpus=1)  # more than every node type's max_workers together
    with pytest.raises(UserError, match="10000 worker"):
        check_cells_fit([too_many], {too_many.id: estimate(10.0)}, types)
    big_worker = cell(workers=1, cpus=200)  # 200 CPUs for one worker: more than a p5.48xlarge has
    with pytest.raises(UserError, match="200 CPUs"):
        check_cells_fit([big_worker], {big_worker.id: estimate(10.0)}, types)
    check_cells_fit([big_worker], {big_worker.id: estimate(10.0)}, _with_unknown_cpus(types))  # not checkable
    shared_gpu = cell(workers=2, gpus=0.5)  # two ranks on one GPU: twice the memory on it
    check_cells_fit([shared_gpu], {shared_gpu.id: estimate(usable_a100 / 2)}, types)
    with pytest.raises(UserError, match="fits no node type"):
        check_cells_fit([shared_gpu], {shared_gpu.id: estimate(usable_a100 / 2 + 1)}, types)


def _with_unknown_cpus(types):
    import dataclasses

    return [dataclasses.replace(node, cpus=None) for node in types]


def test_cpu_cells_need_cpus_only():
    types = validate_cluster(CLUSTER_YAML).node_types
    cpu_cell = cell(gpus=0, cpus=16)
    check_cells_fit([cpu_cell], {cpu_cell.id: estimate(500.0)}, types)  # the head has 16 CPUs
    hungry = cell(gpus=0, cpus=400)
    with pytest.raises(UserError, match="1 worker\\(s\\) of 400"):
        check_cells_fit([hungry], {hungry.id: estimate(1.0)}, types)


def test_real_estimates_fit_the_shipped_cluster_only_with_the_savings():
    from sweeper.ladders import count_parameters, get_ladder, meta_model

    types = validate_cluster(CLUSTER_YAML).node_types
    total = count_parameters(meta_model(get_ladder("starcoderbase").scale("3b").arch))[1]
    plain = cell("fft", "3b")
    checkpointed = cell("fft", "3b", gradient_checkpointing=True)
    plan = {c.id: estimate_memory(c, total, total) for c in (plain, checkpointed)}
    with pytest.raises(UserError, match=r"cell fft/3b .* fits no node type"):
        check_cells_fit([plain], plan, types)
    check_cells_fit([checkpointed], plan, types)


def test_live_nodes_become_node_types():
    nodes = [
        {"Alive": True, "NodeManagerAddress": "10.0.0.1", "Resources": {"CPU": 16.0, "node:__internal_head__": 1.0,
                                                                          "sweeper_driver": 1000.0}},
        {"Alive": True, "NodeManagerAddress": "10.0.0.2",
         "Resources": {"CPU": 96.0, "GPU": 8.0, "accelerator_type:H100": 1.0}},
        {"Alive": True, "NodeManagerAddress": "10.0.0.3", "Resources": {"CPU": 96.0, "GPU": 8.0,
                                                                          "accelerator_type:A100": 1.0}},
        {"Alive": False, "NodeManagerAddress": "10.0.0.4", "Resources": {"CPU": 8.0, "GPU": 1.0}},
    ]
    head, h100, a100 = live_node_types(nodes)
    assert head.head and head.gpus == 0
    assert h100.accelerator == "H100-80GB" and h100.gpu_memory_gib == GPU_MEMORY_GIB["H100-80GB"]
    assert a100.gpu_memory_gib is None  # "A100" does not say 40 or 80 GB

    big = cell("fft", "15b")
    with pytest.raises(UserError, match=r"unknown memory .*sweeper_gpu_memory_gib"):
        check_cells_fit([big], {big.id: estimate(100.0)}, [head, a100])
    nodes[2]["Resources"]["sweeper_gpu_memory_gib"] = 80.0
    assert live_node_types(nodes)[2].gpu_memory_gib == 80.0


def test_node_types_of_a_prepared_config():
    config = validate_cluster(CLUSTER_YAML).config
    assert [node.name for node in node_types_of(config)] == list(config["available_node_types"])
