"""A Ray cluster launcher config (`cluster.yaml`): Ray's own validation, sweeper's checks, node types.

`validate_cluster` runs what `ray up` runs before it touches a cloud (Ray's provider defaults via
`prepare_config`, then Ray's JSON schema and consistency checks via `validate_config`; both offline:
for AWS they read Ray's bundled defaults.yaml and never call AWS), then sweeper's own checks:

- unknown keys: Ray's schema rejects them at the top level, in node types, `docker` and `auth`. It lets
  `provider` hold anything (each cloud reads its own keys) and `node_config` (passed to the cloud API,
  which checks it at launch). sweeper also rejects, for `provider.type: aws`, provider keys that neither
  Ray's schema nor Ray's AWS provider knows (a misspelt `region` silently means us-west-2), and
  credentials in the file (`provider.aws_credentials`);
- the five command lists are given (Ray's AWS defaults would install a Ray nightly wheel), token
  authentication is on (`RAY_AUTH_MODE=token`; Ray 2.60 turns it on by default only for local clusters)
  and a rayproject/ray image has the installed Ray's version;
- the head declares no GPUs and declares the `sweeper_driver` resource that trial drivers are pinned
  to; every node type has min_workers <= max_workers; a GPU node type really has GPUs;
- storage is shared: `SWEEPER_STORAGE` (set in the containers' environment) is a URI such as
  s3://bucket/path whenever the cluster can have more than one node;
- the dashboard and job API are not public: the head's `ray start` may bind `--dashboard-host` only to
  a loopback address (Ray's default is 127.0.0.1), reached through `ray dashboard cluster.yaml`.

Every failure is a one-line `UserError` naming the file, the field and what was expected. What is
allowed but unsafe is a warning (`ClusterSpec.warnings`): on AWS, a node type that runs with Ray's
launcher role `ray-autoscaler-v1` (full EC2 and S3 access to the account), or with no instance profile
on the head (the launcher then gives it that role), instead of a profile limited to what the node needs.

`ClusterSpec.node_types` describes what each node type offers for the fit check (`check_cells_fit`):
CPUs and GPUs from `resources` or, when not declared, from the small EC2 table below; GPU memory per GPU
from the table, or from the custom resource `sweeper_gpu_memory_gib` (integer GiB per GPU; it wins over
the table, e.g. for an instance type the table lacks or to keep headroom).
"""

from __future__ import annotations

import copy
import logging
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from sweeper.core.config import load_yaml
from sweeper.core.errors import UserError, first_line
from sweeper.core.paths import STORAGE_ENV
from sweeper.memory import MemoryEstimate, usable_gib
from sweeper.schema import Cell

DRIVER_RESOURCE = "sweeper_driver"  # on the head only: Tune trial drivers request it, training never does
GPU_MEMORY_RESOURCE = "sweeper_gpu_memory_gib"
AUTH_ENV = "RAY_AUTH_MODE"
COMMAND_LISTS = ("setup_commands", "head_setup_commands", "worker_setup_commands", "head_start_ray_commands",
                 "worker_start_ray_commands")
# Keys Ray's AWS provider reads beyond those its schema lists (ray/autoscaler/_private/aws/*.py).
AWS_PROVIDER_KEYS = frozenset({"key_pair"})
CREDENTIAL_KEYS = frozenset({"aws_credentials"})


class Instance(NamedTuple):
    cpus: int  # vCPUs
    gpus: int
    accelerator: str | None


# GPU memory per GPU in GiB: nvidia-smi's total (MiB) / 1024. Names match sweeper.plan.ACCELERATORS.
GPU_MEMORY_GIB: dict[str, float] = {
    "H200-141GB": 143771 / 1024,
    "H100-80GB": 81559 / 1024,
    "A100-80GB": 81920 / 1024,
    "A100-40GB": 40960 / 1024,
    "L40S-48GB": 46068 / 1024,
    "L4": 23034 / 1024,
    "A10G-24GB": 23028 / 1024,
}


def _sizes(family: str, accelerator: str, sizes: dict[str, tuple[int, int]]) -> dict[str, Instance]:
    return {f"{family}.{size}": Instance(cpus, gpus, accelerator) for size, (cpus, gpus) in sizes.items()}


_G_SIZES = {"xlarge": (4, 1), "2xlarge": (8, 1), "4xlarge": (16, 1), "8xlarge": (32, 1), "16xlarge": (64, 1),
            "12xlarge": (48, 4), "24xlarge": (96, 4), "48xlarge": (192, 8)}
# AWS EC2 GPU instance types (aws.amazon.com/ec2/instance-types: accelerated computing), vCPUs and GPUs.
EC2_INSTANCES: dict[str, Instance] = {
    "p5.48xlarge": Instance(192, 8, "H100-80GB"),
    "p5e.48xlarge": Instance(192, 8, "H200-141GB"),
    "p5en.48xlarge": Instance(192, 8, "H200-141GB"),
    "p4de.24xlarge": Instance(96, 8, "A100-80GB"),
    "p4d.24xlarge": Instance(96, 8, "A100-40GB"),
    **_sizes("g6e", "L40S-48GB", _G_SIZES),
    **_sizes("g6", "L4", _G_SIZES),
    **_sizes("g5", "A10G-24GB", _G_SIZES),
}


@dataclass(frozen=True)
class NodeType:
    name: str
    cpus: float | None  # None: neither declared nor an instance type sweeper knows
    gpus: int
    gpu_memory_gib: float | None  # per GPU
    accelerator: str | None
    min_workers: int
    max_workers: int
    head: bool = False


@dataclass(frozen=True)
class ClusterSpec:
    source: str
    config: dict[str, Any]  # Ray's prepared config (provider defaults filled in)
    node_types: tuple[NodeType, ...]
    storage_path: str | None
    max_workers: int  # worker nodes beside the head, all types together
    multi_node: bool  # can the cluster have more than one node?
    warnings: tuple[str, ...] = ()  # allowed but unsafe (see the module docstring)


def load_cluster(path: str | Path) -> dict[str, Any]:
    """The YAML mapping of a cluster config; a missing file or bad YAML is a one-line `UserError`."""
    raw = load_yaml(Path(path))
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of Ray cluster config fields at the top level")
    return raw


def validate_cluster(path_or_dict: str | Path | Mapping[str, Any], *, storage_path: str | None = None
                     ) -> ClusterSpec:
    """Ray's validation + sweeper's checks (see the module docstring). `storage_path` (e.g. from
    `--storage`) replaces the `SWEEPER_STORAGE` the file sets in the containers."""
    if isinstance(path_or_dict, Mapping):
        source, raw = "cluster config", copy.deepcopy(dict(path_or_dict))
    else:
        source, raw = str(path_or_dict), load_cluster(path_or_dict)
    provider = raw.get("provider")
    if not isinstance(provider, dict) or not isinstance(provider.get("type"), str):
        raise UserError(f"{source}: provider: expected a mapping with a `type` (aws, gcp, azure, local, ...)")
    _check_provider_keys(provider, source)
    missing = [name for name in COMMAND_LISTS if name not in raw]
    if missing:
        raise UserError(f"{source}: {missing[0]}: expected an explicit list (Ray's {provider['type']} defaults "
                        "install a Ray nightly wheel and start Ray without token authentication)")
    config = _ray_prepare_and_validate(raw, source)

    # An on-prem file (`provider.type: local`) lists addresses, not hardware: Ray detects it at `ray start`.
    on_prem = provider["type"] == "local"
    types = () if on_prem else node_types_of(config, source)
    multi_node = config["max_workers"] > 0 and any(
        node.get("max_workers", 0) > 0 for node in config["available_node_types"].values())
    spec = ClusterSpec(source=source, config=config, node_types=types,
                       storage_path=storage_path or _env_value(config, STORAGE_ENV, head=True),
                       max_workers=config["max_workers"], multi_node=multi_node,
                       warnings=tuple(_role_warnings(config, source)) if provider["type"] == "aws" else ())
    _check_driver_resource(config, source, on_prem)
    _check_image(config, source)
    _check_auth(config, source)
    _check_dashboard(config, source)
    _check_storage(spec)
    return spec


def node_types_of(config: Mapping[str, Any], source: str = "cluster config") -> tuple[NodeType, ...]:
    """The node types of a prepared cluster config (e.g. the head's ~/ray_bootstrap_config.yaml, which
    `ray up` writes there) as the fit check sees them; an inconsistent GPU declaration is a `UserError`."""
    return tuple(_node_type(name, node, name == config["head_node_type"], source)
                 for name, node in config["available_node_types"].items())


# Ray's accelerator_type resource names (ray.util.accelerators) -> the names above. Plain "A100" does not
# say 40 or 80 GB: such a node needs the sweeper_gpu_memory_gib resource (`ray start --resources`).
RAY_ACCELERATOR_TYPES = {"H100": "H100-80GB", "H200": "H200-141GB", "A100-80G": "A100-80GB",
                         "A100-40G": "A100-40GB", "L40S": "L40S-48GB", "L4": "L4", "A10G": "A10G-24GB"}


def live_node_types(nodes: Sequence[Mapping[str, Any]]) -> list[NodeType]:
    """Every alive node of a running cluster (`ray.nodes()`) as a node type of its own: for clusters
    whose file sweeper has not seen (on-prem, KubeRay). An autoscaling cluster shows only the nodes it
    has started; there, check against its file (`node_types_of`) instead."""
    types = []
    for node in nodes:
        if not node.get("Alive"):
            continue
        resources = node["Resources"]
        gpus = int(resources.get("GPU", 0))
        ray_type = next((key.split(":", 1)[1] for key in resources if key.startswith("accelerator_type:")), None)
        accelerator = RAY_ACCELERATOR_TYPES.get(ray_type) if gpus else None
        memory = resources.get(GPU_MEMORY_RESOURCE) or (GPU_MEMORY_GIB[accelerator] if accelerator else None)
        types.append(NodeType(name=node.get("NodeManagerAddress", node.get("NodeID", "?")),
                              cpus=resources.get("CPU", 0), gpus=gpus, gpu_memory_gib=memory,
                              accelerator=accelerator or ray_type, min_workers=1, max_workers=1,
                              head="node:__internal_head__" in resources))
    return types


def _check_provider_keys(provider: dict[str, Any], source: str) -> None:
    for key in provider:
        if key in CREDENTIAL_KEYS:
            raise UserError(f"{source}: provider.{key}: expected no credentials in the file; use an AWS "
                            "profile or the environment (AWS_PROFILE) on the machine that runs `ray up`")
    if provider["type"] != "aws":
        return
    known = set(_ray_schema()["properties"]["provider"]["properties"]) | AWS_PROVIDER_KEYS
    for key in provider:
        if key not in known:
            raise UserError(f"{source}: unknown key {key!r} in provider; expected one of: {', '.join(sorted(known))}")


def _ray_schema() -> dict[str, Any]:
    import json

    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def _ray_prepare_and_validate(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """What `ray up` runs before calling the cloud: provider defaults, then schema and consistency."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    # prepare_config logs each default it fills in ("setting max workers for head node type to 0").
    util_logger = logging.getLogger("ray.autoscaler._private.util")
    level = util_logger.level
    util_logger.setLevel(logging.WARNING)
    try:
        config = prepare_config(raw)
    except NotImplementedError as err:
        raise UserError(f"{source}: provider.type: {first_line(err)}") from None
    except (KeyError, ValueError, TypeError, AttributeError, AssertionError) as err:
        raise UserError(f"{source}: Ray cannot read it ({type(err).__name__}: {first_line(err)})") from None
    finally:
        util_logger.setLevel(level)
    try:
        validate_config(config)
    except jsonschema.ValidationError as err:
        raise UserError(f"{source}: {_describe_schema_error(err)}") from None
    except (ValueError, RuntimeError) as err:
        # Ray's consistency messages name their field in backquotes (`head_node_type`, `max_workers`).
        field = re.search(r"`(\w+)`", str(err))
        raise UserError(f"{source}: {field.group(1) + ': ' if field else ''}{first_line(err)}") from None
    return config


def _describe_schema_error(err: Any) -> str:
    where = ".".join(str(part) for part in err.absolute_path) or "top level"
    if err.validator == "additionalProperties":
        unexpected = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        allowed = ", ".join(sorted(err.schema.get("properties", {})))
        scope = f" in {where}" if err.absolute_path else ""
        return f"unknown key {unexpected[0]!r}{scope}; expected one of: {allowed}"
    return f"{where}: {first_line(err.message)}"


def _node_type(name: str, node: dict[str, Any], head: bool, source: str) -> NodeType:
    field = f"{source}: available_node_types.{name}"
    resources = node.get("resources", {})
    instance_type = node.get("node_config", {}).get("InstanceType")
    instance = EC2_INSTANCES.get(instance_type)
    min_workers, max_workers = node.get("min_workers", 0), node.get("max_workers", 0)
    if min_workers > max_workers:
        raise UserError(f"{field}: min_workers ({min_workers}) must be at most max_workers ({max_workers})")

    gpus = resources.get("GPU", instance.gpus if instance else 0)
    if head and gpus:
        where = "resources.GPU" if "GPU" in resources else f"node_config.InstanceType ({instance_type} has GPUs)"
        raise UserError(f"{field}: {where}: expected a head without GPUs: it runs the trial drivers and no "
                        "training (use a CPU instance type, or set resources.GPU: 0)")
    if not head and instance and instance.gpus and not gpus:
        raise UserError(f"{field}: resources.GPU: {instance_type} has {instance.gpus} GPU(s) but the node type "
                        "declares 0; declare them or use a CPU instance type")
    if instance and gpus > instance.gpus:
        raise UserError(f"{field}: resources.GPU: {instance_type} has {instance.gpus} GPU(s), not {gpus}")
    if GPU_MEMORY_RESOURCE in resources and not gpus:
        raise UserError(f"{field}: resources.GPU: expected GPUs on a node type that declares "
                        f"{GPU_MEMORY_RESOURCE} (a GPU node type without GPUs)")

    accelerator = instance.accelerator if instance and gpus else None
    memory = resources.get(GPU_MEMORY_RESOURCE) or (GPU_MEMORY_GIB[accelerator] if accelerator else None)
    if gpus and memory is None:
        raise UserError(f"{field}: resources.{GPU_MEMORY_RESOURCE}: expected the GPU memory per GPU (GiB) of "
                        f"this GPU node type: sweeper does not know instance type {instance_type!r}")
    cpus = resources.get("CPU", instance.cpus if instance else None)
    return NodeType(name=name, cpus=cpus, gpus=gpus, gpu_memory_gib=memory, accelerator=accelerator,
                    min_workers=min_workers, max_workers=max_workers, head=head)


def _check_driver_resource(config: dict[str, Any], source: str, on_prem: bool) -> None:
    """Trial drivers are pinned to the head by the `sweeper_driver` resource: the head must have it."""
    if on_prem:
        if DRIVER_RESOURCE not in " ".join(config.get("head_start_ray_commands", [])):
            raise UserError(f"{source}: head_start_ray_commands: expected `ray start --head --resources="
                            f"'{{\"{DRIVER_RESOURCE}\": 1000}}'` (sweeper pins the trial drivers to the head)")
        return
    head = config["head_node_type"]
    if config["available_node_types"][head].get("resources", {}).get(DRIVER_RESOURCE, 0) < 1:
        raise UserError(f"{source}: available_node_types.{head}.resources.{DRIVER_RESOURCE}: expected a "
                        "positive amount on the head (sweeper pins the trial drivers to the head with it)")


def _check_image(config: dict[str, Any], source: str) -> None:
    import ray

    docker = config.get("docker") or {}
    images = {key: docker[key] for key in ("image", "head_image", "worker_image") if docker.get(key)}
    images = {f"docker.{key}": image for key, image in images.items()}
    for name, node in config["available_node_types"].items():
        if (node.get("docker") or {}).get("worker_image"):
            images[f"available_node_types.{name}.docker.worker_image"] = node["docker"]["worker_image"]
    for key, image in images.items():
        name, _, tag = image.partition(":")
        matches = tag == ray.__version__ or tag.startswith(f"{ray.__version__}-")
        if name.split("/")[-2:] == ["rayproject", "ray"] and not matches:
            raise UserError(f"{source}: {key}: expected a rayproject/ray image of Ray {ray.__version__} "
                            f"(the version installed here, which `ray up` and the jobs use), got {image!r}")


def _check_auth(config: dict[str, Any], source: str) -> None:
    for head in (True, False):
        mode = _env_value(config, AUTH_ENV, head=head)
        if mode != "token":
            role = "head" if head else "worker"
            raise UserError(f"{source}: docker.run_options: expected {AUTH_ENV}=token in the {role} containers' "
                            f"environment (or in the {role} start commands), got {mode or 'nothing'}: keep "
                            "Ray's token authentication on")


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
LAUNCHER_ROLE = "ray-autoscaler-v1"  # what Ray's AWS launcher gives a head without a profile


def _check_dashboard(config: dict[str, Any], source: str) -> None:
    """The dashboard serves the job API (run any command on the cluster) behind one token: it must not
    listen beyond the head's loopback interface."""
    for command in config.get("head_start_ray_commands", []):
        words = shlex.split(command.replace(";", " ; "))
        for index, word in enumerate(words):
            host = None
            if word.startswith("--dashboard-host="):
                host = word.partition("=")[2]
            elif word == "--dashboard-host" and index + 1 < len(words):
                host = words[index + 1]
            if host is not None and host not in LOOPBACK_HOSTS:
                raise UserError(f"{source}: head_start_ray_commands: --dashboard-host={host} makes the dashboard "
                                "and job API listen beyond the head; expected 127.0.0.1 (reach it with "
                                "`ray dashboard cluster.yaml`, an ssh tunnel)")


def _role_warnings(config: dict[str, Any], source: str) -> list[str]:
    """Node types whose instance profile is (or defaults to) the launcher's broad role."""
    warnings = []
    head = config["head_node_type"]
    for name, node in config["available_node_types"].items():
        profile = (node.get("node_config") or {}).get("IamInstanceProfile")
        if profile is None and name == head:
            chosen = f"no IamInstanceProfile, so the launcher gives the head {LAUNCHER_ROLE}"
        elif profile is not None and LAUNCHER_ROLE in str(profile.get("Name", profile.get("Arn", ""))):
            chosen = f"IamInstanceProfile {LAUNCHER_ROLE}"
        else:
            continue
        warnings.append(f"{source}: available_node_types.{name}.node_config: {chosen} (full EC2 and S3 access "
                        "to the account); give it a profile limited to the sweep's bucket (see the README, "
                        "'Least-privilege roles')")
    return warnings


def _check_storage(spec: ClusterSpec) -> None:
    path = spec.storage_path
    if not spec.multi_node:
        return
    if not path:
        raise UserError(f"{spec.source}: docker.run_options: expected --env={STORAGE_ENV}=s3://bucket/path: a "
                        "cluster that can have more than one node needs shared storage for checkpoints")
    scheme, sep, _ = path.partition("://")
    if not sep or scheme == "file":
        raise UserError(f"{spec.source}: {STORAGE_ENV}: expected shared storage such as s3://bucket/path, not "
                        f"the local path {path!r}: a cluster with up to {spec.max_workers + 1} nodes cannot "
                        "share a folder of one node")


def _env_value(config: dict[str, Any], name: str, *, head: bool) -> str | None:
    """`name` as the head's (or the workers') Ray processes see it: the containers' environment
    (docker run options), else an assignment in the start commands."""
    docker = config.get("docker") or {}
    options = list(docker.get("run_options", [])) + list(docker.get("head_run_options" if head else
                                                                     "worker_run_options", []))
    if not head:
        for node in config["available_node_types"].values():
            options += list((node.get("docker") or {}).get("worker_run_options", []))
    uses_docker = any(docker.get(key) for key in ("image", "head_image", "worker_image"))
    env = _docker_env(options) if uses_docker else {}
    if name in env:
        return env[name]
    commands = " ; ".join(config.get("head_start_ray_commands" if head else "worker_start_ray_commands", []))
    found = re.findall(rf"\b{name}=(\S+)", commands)
    return found[-1].strip("'\"") if found else None


def _docker_env(options: Sequence[str]) -> dict[str, str]:
    """`--env NAME=value`, `--env=NAME=value`, `-e NAME=value` in docker run options."""
    tokens = shlex.split(" ".join(str(option) for option in options))
    env = {}
    for index, token in enumerate(tokens):
        if token in ("-e", "--env") and index + 1 < len(tokens):
            assignment = tokens[index + 1]
        elif token.startswith("--env="):
            assignment = token.removeprefix("--env=")
        elif token.startswith("-e") and len(token) > 2 and "=" in token:
            assignment = token[2:]
        else:
            continue
        key, sep, value = assignment.partition("=")
        if sep:  # `--env NAME` alone passes the host's value, which this machine cannot see
            env[key] = value
    return env


def check_cells_fit(cells: Sequence[Cell], memory_plan: Mapping[str, MemoryEstimate],
                    node_types: Sequence[NodeType]) -> None:
    """Before a launch: every cell's workers must fit the nodes that can exist. A worker needs its CPUs
    and GPUs on one node and its memory estimate within each GPU's usable memory; the workers of one
    trial may span nodes (Ray Train places them with a placement group)."""
    candidates = [node for node in node_types if node.head or node.max_workers > 0]
    for cell in cells:
        estimate = memory_plan[cell.id]
        slots = sum(_worker_slots(cell, estimate, node) * (1 if node.head else node.max_workers)
                    for node in candidates)
        if slots < cell.resources.workers:
            raise UserError(f"cell {cell.method}/{cell.scale} ({cell.id}) fits no node type: "
                            f"{_need(cell, estimate)}; {_largest(candidates)}")


def _ranks_per_gpu(cell: Cell) -> int:
    """Ray packs workers with a fraction of a GPU onto one GPU (0.5 -> two ranks share it)."""
    share = cell.resources.gpus_per_worker
    return 1 if share >= 1 else int(1 // share)


def _worker_slots(cell: Cell, estimate: MemoryEstimate, node: NodeType) -> int:
    """How many of the cell's workers one node of this type can hold."""
    r = cell.resources
    by_cpu = int(node.cpus // r.cpus_per_worker) if node.cpus is not None else r.workers
    if r.gpus_per_worker == 0:
        return by_cpu
    if node.gpu_memory_gib is None or estimate.total_gib * _ranks_per_gpu(cell) > usable_gib(node.gpu_memory_gib):
        return 0
    return min(by_cpu, int(node.gpus // r.gpus_per_worker))


def _need(cell: Cell, estimate: MemoryEstimate) -> str:
    r = cell.resources
    cpus = f"{r.workers * r.cpus_per_worker:g} CPUs"
    if r.gpus_per_worker == 0:
        return f"it needs {cpus} ({r.workers} worker(s) of {r.cpus_per_worker:g})"
    return (f"it needs {r.workers} worker(s) of {r.gpus_per_worker:g} GPU and {r.cpus_per_worker:g} CPUs, "
            f"{estimate.total_gib * _ranks_per_gpu(cell):.1f} GiB per GPU (weights {estimate.weights_gib:.1f}, "
            f"gradients {estimate.gradients_gib:.1f}, optimizer {estimate.optimizer_gib:.1f}, activations "
            f"{estimate.activations_gib:.1f}, buffers {estimate.buffers_gib:.1f})")


def _largest(nodes: Sequence[NodeType]) -> str:
    gpu_nodes = [node for node in nodes if node.gpus]
    if not gpu_nodes:
        most_cpus = max((node.cpus or 0 for node in nodes), default=0)
        return f"the cluster has no GPU node type (at most {most_cpus:g} CPUs on a node)"
    node = max(gpu_nodes, key=lambda n: (n.gpu_memory_gib or 0, n.gpus))
    memory = (f"{usable_gib(node.gpu_memory_gib):.1f} of {node.gpu_memory_gib:.1f} GiB usable" if node.gpu_memory_gib
              else f"unknown memory (give the node the {GPU_MEMORY_RESOURCE} resource)")
    cpus = "unknown" if node.cpus is None else f"{node.cpus:g}"
    return (f"the largest node type {node.name!r} has {node.gpus} x {node.accelerator or 'GPU'} with {memory} "
            f"and {cpus} CPUs (lower recipe.micro_batch, turn on recipe.gradient_checkpointing, or shard with "
            "recipe.zero_stage 3 over more resources.workers)")
