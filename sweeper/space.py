"""Search spaces: a YAML grid of tuning methods x model scales -> a validated `Space` -> `Cell`s.

A space names the ladder and its scales, the methods (each with its own settings), the instruction
data, the training recipe, early stopping, optional per-cell search ranges, resources per trial, the
cost assumptions and a budget. `overrides` change the resolved config of chosen cells (e.g. ZeRO-3
for full fine-tuning of the largest scales); `--set key.path=value` changes any field of the space.

A cell's id is a hash of everything that decides what it trains and measures (ladder, scale, method
and its resolved settings, data, recipe, search, early stopping). Resources are left out on purpose:
running the same cell on more or fewer workers must not make a finished result look new. So is
`seeds`, the number of replicates (runs of the cell with seeds recipe.seed, recipe.seed + 1, ...):
asking for more replicates adds runs to the same cell and keeps the ones already done.
"""

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)

from sweeper.config import Frozen, load_yaml, model_in
from sweeper.errors import UserError
from sweeper.paths import PROJECT_ROOT

Fraction = Annotated[float, Field(gt=0, lt=1)]


def _not_a_bool(value: Any) -> Any:
    # Lax validation reads `true` as 1: `seeds: true` is a mistake, not one replicate.
    if isinstance(value, bool):
        raise ValueError("expected a positive whole number of replicates")
    return value


# Upper bounds far beyond any fine-tuning run, so that a typo (`steps: 1e39`, which lax validation reads
# as a whole number) is refused rather than planned at $1e32.
MAX_STEPS = 10**8  # optimizer steps
MAX_SEQUENCES = 10**7  # sequences per step or per evaluation
MAX_TOKENS = 2**20  # tokens per sequence (a model's own position limit is checked by the plan)
MAX_EXAMPLES = 10**10  # instruction examples
MAX_RUNS = 10**4  # trials or replicates of one cell
MAX_WORKERS = 10**5  # Ray Train workers of one trial
MAX_RETRIES = 100

Steps = Annotated[int, Field(gt=0, le=MAX_STEPS)]
Sequences = Annotated[int, Field(gt=0, le=MAX_SEQUENCES)]
Seeds = Annotated[int, Field(gt=0, le=MAX_RUNS), BeforeValidator(_not_a_bool)]
# A space's name is the default folder under sweeps/ and part of every path derived from it: one path
# segment of plain characters, so that `name: ../../x` cannot send a sweep outside sweeps/.
SpaceName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")]


class DataConfig(Frozen):
    """Instruction data. Examples are formatted OctoPack-style: `Question: ...\\n\\nAnswer: ...` + EOS."""

    source: str = "local-code"  # registry in sweeper.data: local-code | git | commitpackft
    path: str | None = None  # a git repository for `git`; a local dataset folder for `commitpackft`
    seq_len: Annotated[int, Field(gt=0, le=MAX_TOKENS)] = 256  # tokens per packed training sequence
    loss_on: Literal["all", "answer"] = "all"  # Astraios computes the loss on all tokens
    max_examples: Annotated[int, Field(gt=0, le=MAX_EXAMPLES)] | None = None  # cap on instruction examples (train + validation)
    val_fraction: Fraction = 0.05  # share of examples held out, chosen by content hash
    max_val_sequences: Sequences = 64  # validation sequences per evaluation (bounds eval cost)
    languages: tuple[str, ...] = ("python",)  # CommitPackFT languages
    with_oasst: bool = True  # CommitPackFT + OASST, as Astraios (bigcode/guanaco-commits)


class Recipe(Frozen):
    """The training recipe. Defaults are the Astraios recipe (arXiv 2401.00788, section 3)."""

    lr: PositiveFloat = 1e-4  # peak learning rate
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: Annotated[int, Field(ge=0, le=MAX_STEPS)] = 12
    weight_decay: NonNegativeFloat = 0.05
    steps: Steps = 200  # optimizer steps
    global_batch: Sequences = 32  # sequences per optimizer step, all workers and accumulation together
    micro_batch: Sequences = 8  # sequences per forward pass on one worker
    eval_every: Steps = 10  # optimizer steps between validation losses
    seed: int = 0
    precision: Literal["fp32", "bf16", "fp16"] = "bf16"
    grad_clip: PositiveFloat | None = 1.0  # max global grad norm; null = no clipping
    gradient_checkpointing: bool = False
    zero_stage: Literal[0, 2, 3] = 0  # DeepSpeed ZeRO stage; 0 = plain PyTorch (DDP when workers > 1)

    @model_validator(mode="after")
    def _consistent(self) -> "Recipe":
        if self.warmup_steps >= self.steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be below steps ({self.steps})")
        if self.eval_every > self.steps:
            raise ValueError(f"eval_every ({self.eval_every}) must be at most steps ({self.steps})")
        return self


class LogRange(Frozen):
    """A log-uniform range to search per cell."""

    low: PositiveFloat
    high: PositiveFloat

    @model_validator(mode="after")
    def _ordered(self) -> "LogRange":
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self


class Search(Frozen):
    """Per-cell hyperparameter search: `trials` trials per cell, one Optuna study per cell."""

    trials: Annotated[int, Field(gt=0, le=MAX_RUNS)] = 1
    lr: LogRange | None = None  # replaces recipe.lr when given
    sampler: Literal["tpe", "random"] = "tpe"

    @model_validator(mode="after")
    def _needs_range(self) -> "Search":
        if self.trials > 1 and self.lr is None:
            raise ValueError("trials > 1 needs a range to search (e.g. lr: {low: 1e-4, high: 1e-2})")
        return self


class EarlyStopping(Frozen):
    """ASHA among the trials of one cell only; divergence stops any trial."""

    asha: bool = True  # only acts when a cell has several trials
    grace_steps: Steps = 20  # ASHA never stops a trial before this many optimizer steps
    reduction_factor: Annotated[int, Field(ge=2)] = 2  # ASHA's eta: keep the best 1/eta at each rung
    divergence_factor: Annotated[float, Field(gt=1)] = 3.0  # val loss above factor x its first value


class Resources(Frozen):
    """What one trial gets. Not part of the cell id (see the module docstring)."""

    workers: Annotated[int, Field(gt=0, le=MAX_WORKERS)] = 1  # Ray Train workers per trial (DDP / DeepSpeed ranks)
    cpus_per_worker: PositiveFloat = 1
    gpus_per_worker: NonNegativeFloat = 0
    max_concurrent_trials: PositiveInt | None = None  # None: as many as the cluster has room for


class Cost(Frozen):
    """Assumptions that turn FLOPs into device-hours and dollars. Table values in sweeper.plan."""

    accelerator: str = "H100-80GB"
    peak_tflops: PositiveFloat | None = None  # overrides the table's dense bf16 peak
    utilization: Annotated[float, Field(gt=0, le=1)] = 0.4  # achieved / peak (model FLOPs utilisation)
    usd_per_hour: NonNegativeFloat | None = None  # overrides the table's price per device-hour


class Override(Frozen):
    """`set` these dotted fields on the cells of the listed methods and scales (all when omitted)."""

    methods: tuple[str, ...] | None = None
    scales: tuple[str, ...] | None = None
    set: dict[str, Any]


class Space(Frozen):
    name: SpaceName
    description: str = ""
    ladder: str
    scales: tuple[str, ...]
    methods: dict[str, dict[str, Any]]  # method name -> its settings (empty = the method's defaults)
    data: DataConfig = DataConfig()
    recipe: Recipe = Recipe()
    search: Search = Search()
    early_stopping: EarlyStopping = EarlyStopping()
    resources: Resources = Resources()
    seeds: Seeds = 1  # replicates of every cell, run with seeds recipe.seed, recipe.seed + 1, ...
    cost: Cost = Cost()
    budget_usd: NonNegativeFloat | None = None  # launch refuses a grid estimated above this
    max_retries: Annotated[int, Field(ge=0, le=MAX_RETRIES)] = 2  # a failed trial is retried this many times across runs
    overrides: tuple[Override, ...] = ()

    @field_validator("methods", mode="before")
    @classmethod
    def _none_is_defaults(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {name: settings or {} for name, settings in value.items()}
        return value

    @model_validator(mode="after")
    def _non_empty(self) -> "Space":
        if not self.scales:
            raise ValueError("the grid is empty: `scales` lists no scale")
        if not self.methods:
            raise ValueError("the grid is empty: `methods` lists no method")
        return self


class Cell(Frozen):
    """One grid point with its fully resolved config."""

    space: str
    ladder: str
    scale: str
    method: str
    method_config: dict[str, Any]
    data: DataConfig
    recipe: Recipe
    search: Search
    early_stopping: EarlyStopping
    resources: Resources
    seeds: Seeds = 1

    @property
    def id(self) -> str:
        # Not `seeds`: each replicate records its own seed, and more replicates must not orphan the done ones.
        science = self.model_dump(mode="json", exclude={"space", "resources", "seeds"})
        digest = hashlib.sha256(json.dumps(science, sort_keys=True).encode()).hexdigest()
        return digest[:12]

    @property
    def frozen_base(self) -> bool:
        return self.method != "fft"

    @property
    def tokens_per_step(self) -> int:
        """Training tokens of one optimizer step: global_batch sequences of seq_len tokens."""
        return self.recipe.global_batch * self.data.seq_len

    @property
    def train_tokens(self) -> int:
        return self.recipe.steps * self.tokens_per_step


SPACES_DIR = PROJECT_ROOT / "search_spaces"


def resolve_space_path(name_or_path: str) -> Path:
    """A path to a YAML file, or the name of a shipped space (`micro` -> search_spaces/micro.yaml)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    shipped = SPACES_DIR / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    names = sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))
    raise UserError(f"no search space {name_or_path!r}: not a file, and shipped spaces are {', '.join(names)}")


def load_space(name_or_path: str = "micro", sets: list[str] | tuple[str, ...] = ()) -> Space:
    """Read, override (`--set key.path=value`) and validate a space."""
    path = resolve_space_path(name_or_path)
    raw = load_yaml(path)
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of space fields at the top level")
    for assignment in sets:
        raw = apply_set(raw, assignment)
    space = Space.parse(raw, str(path))
    from sweeper.models import get_ladder

    ladder = get_ladder(space.ladder)
    for scale in space.scales:
        ladder.scale(scale)
    return space


def parse_value(text: str) -> Any:
    """A `--set` value as YAML would read it, plus the numbers YAML 1.1 leaves as strings (`3e-4`)."""
    value = yaml.safe_load(text) if text.strip() else ""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def apply_set(raw: dict[str, Any], assignment: str) -> dict[str, Any]:
    """Return a copy of `raw` with `key.path=value` applied; the path must exist in the space schema."""
    key, sep, text = assignment.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--set {assignment!r}: expected key.path=value")
    parts = key.strip().split(".")
    _check_path(parts, assignment)
    updated = json.loads(json.dumps(raw))
    _set_path(updated, parts, parse_value(text))
    return updated


def _set_path(tree: dict[str, Any], parts: list[str], value: Any, refuse: str | None = None) -> None:
    """tree[parts[0]]...[parts[-1]] = value, in place. Sections missing on the way are created, or, with
    `refuse`, a `UserError` with that message, as is then a missing last key (except in method_config,
    whose fields the method validates)."""
    node = tree
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            if refuse:
                raise UserError(refuse)
            node[part] = {}
        node = node[part]
    if refuse and parts[-1] not in node and parts[0] != "method_config":
        raise UserError(refuse)
    node[parts[-1]] = value


def _check_path(parts: list[str], assignment: str) -> None:
    """Follow the dotted path through the schema; `methods.<name>.<field>` is checked by the method."""
    model: type[BaseModel] | None = Space
    for depth, part in enumerate(parts):
        if model is None:
            return
        if model is Space and part == "methods":
            if len(parts) not in (2, 3):
                raise UserError(f"--set {assignment!r}: expected methods.<method>.<field>=value")
            return
        field = model.model_fields.get(part)
        if field is None:
            where = ".".join(parts[:depth]) or "the space"
            raise UserError(
                f"--set {assignment!r}: {where} has no field {part!r}; "
                f"valid: {', '.join(sorted(model.model_fields))}"
            )
        annotation = field.annotation
        model = model_in(annotation)
        if model is None and depth < len(parts) - 1 and not _is_dict(annotation):
            raise UserError(f"--set {assignment!r}: {'.'.join(parts[: depth + 1])} has no sub-fields")


def _is_dict(annotation: Any) -> bool:
    return getattr(annotation, "__origin__", None) is dict


def select(space: Space, methods: list[str] | None = None, scales: list[str] | None = None) -> Space:
    """The sub-grid with only these methods and scales (`--methods a,b --scales x,y`)."""
    updates: dict[str, Any] = {}
    if methods:
        unknown = [m for m in methods if m not in space.methods]
        if unknown:
            raise UserError(
                f"--methods: {', '.join(unknown)} not in space {space.name!r}; "
                f"valid: {', '.join(space.methods)}"
            )
        updates["methods"] = {m: space.methods[m] for m in methods}
    if scales:
        unknown = [s for s in scales if s not in space.scales]
        if unknown:
            raise UserError(
                f"--scales: {', '.join(unknown)} not in space {space.name!r}; valid: {', '.join(space.scales)}"
            )
        updates["scales"] = tuple(s for s in space.scales if s in scales)
    return space.model_copy(update=updates)


def resolve_method(method: str, settings: dict[str, Any], source: str, memo: Any = None) -> dict[str, Any]:
    """The method's full config (defaults filled in), remembered on disk when `memo` is given."""

    def resolve() -> dict[str, Any]:
        from sweeper.methods import resolve_method_config

        return resolve_method_config(method, settings, source=source)

    return memo.get(["method_config", method, settings], resolve) if memo is not None else resolve()


def expand(space: Space) -> list[Cell]:
    """Every (method, scale) cell with its resolved config, methods outer, scales inner (ladder order)."""
    from sweeper.memo import DiskMemo

    memo = DiskMemo("method_configs")
    cell_fields = {"data", "recipe", "search", "early_stopping", "resources", "seeds"}
    shared = space.model_dump(mode="json", include=cell_fields)
    cells = []
    for method, settings in space.methods.items():
        method_config = resolve_method(method, settings, f"{space.name}: methods.{method}", memo)
        for scale in space.scales:
            raw: dict[str, Any] = {
                "space": space.name,
                "ladder": space.ladder,
                "scale": scale,
                "method": method,
                "method_config": method_config,
                **shared,
            }
            for index, rule in enumerate(space.overrides):
                if (rule.methods is None or method in rule.methods) and (
                    rule.scales is None or scale in rule.scales
                ):
                    raw = _apply_override(raw, rule.set, f"{space.name}: overrides[{index}]", memo)
            cell = Cell.parse(raw, f"{space.name}: cell {method}/{scale}")
            _check_batch(cell)
            cells.append(cell)
    memo.save()
    return cells


def _apply_override(raw: dict[str, Any], assignments: dict[str, Any], source: str, memo: Any) -> dict[str, Any]:
    updated = json.loads(json.dumps(raw))
    for key, value in assignments.items():
        _set_path(updated, key.split("."), value, refuse=f"{source}: set: {key!r} is not a field of a cell")
    if "method_config" in {key.split(".")[0] for key in assignments}:
        updated["method_config"] = resolve_method(updated["method"], updated["method_config"], source, memo)
    return updated


def _check_batch(cell: Cell) -> None:
    per_step = cell.recipe.micro_batch * cell.resources.workers
    if cell.recipe.global_batch % per_step:
        raise UserError(
            f"{cell.space}: cell {cell.method}/{cell.scale}: recipe.global_batch ({cell.recipe.global_batch}) "
            f"must be a multiple of recipe.micro_batch x resources.workers ({per_step})"
        )
