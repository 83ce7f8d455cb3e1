"""The typed leaf of a sweep: every config a space and a cell are made of (frozen, validated).

`Space` is what a YAML grid says; `Cell` is one (method, scale) point of it with everything resolved.
A cell's id is a hash of everything that decides what it trains and measures (ladder, scale, method
and its resolved settings, data, recipe, search, early stopping). Resources are left out on purpose:
running the same cell on more or fewer workers must not make a finished result look new. So is
`seeds`, the number of replicates (runs of the cell with seeds recipe.seed, recipe.seed + 1, ...):
asking for more replicates adds runs to the same cell and keeps the ones already done.

This module imports no registry: names of ladders, methods and data sources are checked where a
space is loaded and expanded (`sweeper.space`).
"""

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)

from sweeper.core.config import Frozen

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

    source: str = "local-code"  # registry sweeper.data.SOURCES: guanaco-commits | commitpackft | oasst | local-code | git
    path: str | None = None  # a git repository for `git`; a local copy of the hub's folders for the hub sources
    # `local-code`: mine these installed packages (import names) instead of a folder; other sources ignore it,
    # as they ignore `languages`, so that `--set data.source=...` works on a space that sets it.
    packages: tuple[str, ...] = ()
    seq_len: Annotated[int, Field(gt=0, le=MAX_TOKENS)] = 256  # tokens per packed training sequence
    loss_on: Literal["all", "answer"] = "all"  # Astraios computes the loss on all tokens
    max_examples: Annotated[int, Field(gt=0, le=MAX_EXAMPLES)] | None = None  # cap on instruction examples (train + validation)
    val_fraction: Fraction = 0.05  # share of examples held out, chosen by content hash (sources without a released split)
    max_val_sequences: Sequences = 64  # validation sequences per evaluation (bounds eval cost)
    languages: tuple[str, ...] = ("python",)  # CommitPackFT languages
    with_oasst: bool = True  # `commitpackft`: add OctoPack's OASST pairs (bigcode/oasst-octopack), as OctoPack did


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
    # `int8`: load a frozen base's linear weights in 8 bits (LLM.int8, bitsandbytes) and prepare it with
    # peft's prepare_model_for_kbit_training, as Astraios' PEFT runs did (`load_in_8bit`, threshold 6.0).
    base_quantization: Literal["none", "int8"] = "none"

    @model_validator(mode="after")
    def _consistent(self) -> "Recipe":
        if self.base_quantization == "int8" and self.zero_stage:
            raise ValueError("base_quantization int8 does not combine with DeepSpeed ZeRO (zero_stage "
                             f"{self.zero_stage}): an 8-bit base is not sharded; use zero_stage 0")
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
    fp32_peak_tflops: PositiveFloat | None = None  # overrides the table's fp32 peak (cells with recipe.precision fp32)
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


FULL_FINE_TUNING = "fft"


def trains_base(method: str) -> bool:
    """Whether a method updates the base model's own weights: only full fine-tuning does."""
    return method == FULL_FINE_TUNING


# Fields added after sweeps were recorded: at their default they are left out of a cell's id and of a
# space's hash, so that a sweep recorded before them keeps its cells and its launches (the default is
# what those ran). (section, field, default) of a resolved space or cell dump.
ID_NEUTRAL_DEFAULTS = (("recipe", "base_quantization", "none"), ("cost", "fp32_peak_tflops", None),
                       ("data", "packages", []))


def without_neutral_defaults(dump: dict[str, Any]) -> dict[str, Any]:
    """A space or cell dump (mode json) without the `ID_NEUTRAL_DEFAULTS` fields that hold their default."""
    sections = {section: dict(dump[section]) for section, _, _ in ID_NEUTRAL_DEFAULTS if isinstance(dump.get(section), dict)}
    for section, name, default in ID_NEUTRAL_DEFAULTS:
        if section in sections and name in sections[section] and sections[section][name] == default:
            del sections[section][name]
    return {**dump, **sections}


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

    @model_validator(mode="after")
    def _quantizes_a_frozen_base(self) -> "Cell":
        if self.recipe.base_quantization != "none" and trains_base(self.method):
            raise ValueError(f"recipe.base_quantization {self.recipe.base_quantization}: method {self.method!r} "
                             "trains the base's own weights, which cannot be quantized; use it with PEFT methods only")
        return self

    @property
    def id(self) -> str:
        # Not `seeds`: each replicate records its own seed, and more replicates must not orphan the done ones.
        science = without_neutral_defaults(self.model_dump(mode="json", exclude={"space", "resources", "seeds"}))
        digest = hashlib.sha256(json.dumps(science, sort_keys=True).encode()).hexdigest()
        return digest[:12]

    @property
    def frozen_base(self) -> bool:
        return not trains_base(self.method)

    @property
    def tokens_per_step(self) -> int:
        """Training tokens of one optimizer step: global_batch sequences of seq_len tokens."""
        return self.recipe.global_batch * self.data.seq_len

    @property
    def train_tokens(self) -> int:
        return self.recipe.steps * self.tokens_per_step


@dataclass(frozen=True)
class Trial:
    """One run of a cell: search trial `index` of replicate `replicate` (0 .. cell.seeds - 1), with the lr
    its search chose. The one object the launcher hands to Ray and Ray hands to the training loop."""

    cell: Cell
    index: int = 0
    replicate: int = 0
    lr: float | None = None  # the lr the cell's search chose; None: the recipe's
    store: str | None = None  # this sweep's checkpoint store URI; None keeps no checkpoints

    @property
    def seed(self) -> int:
        """What seeds this run (init, data order): replicates differ by it; cell.recipe.seed stays the
        cell's, as it is part of the cell id."""
        return self.cell.recipe.seed + self.replicate

    @property
    def trial_id(self) -> str:
        """Stable across reruns: the ledger's `trial_id` and the checkpoint folder (under the sweep's own
        `<storage>/<sweep id>`). Replicate 0 keeps the id of a cell without replicates, so older sweep
        folders still resume. Not Ray's trial id, which changes with every run."""
        trial = f"{self.cell.id}-t{self.index}"
        return trial if self.replicate == 0 else f"{trial}-s{self.seed}"

    @property
    def search_id(self) -> str:
        """The trials that search the lr together (one Optuna study, one ASHA): one replicate's. Replicate 0
        keeps the cell id, the study's name before replicates existed, so older sweeps resume their study."""
        return self.cell.id if self.replicate == 0 else f"{self.cell.id}-s{self.seed}"

    @property
    def recipe(self) -> Recipe:
        """The cell's recipe with this trial's lr: what the optimizer is built from."""
        return self.cell.recipe if self.lr is None else self.cell.recipe.model_copy(update={"lr": self.lr})


@dataclass(frozen=True)
class TrialReport:
    """What a trial reports at every evaluation, in the ledger's column names (`sweeper.sweep.ledger`):
    the one object the training loop hands back through Ray. The last one is the trial's outcome. It names no
    trial: it always travels with its `Trial` (and Tune writes its own id into a result's `trial_id`)."""

    status: str  # running | done | diverged
    steps: int  # optimizer steps so far (ASHA's time)
    tokens: int
    initial_val_loss: float
    final_val_loss: float  # the latest validation loss: the final one once the trial is over
    best_val_loss: float
    tokens_per_s: float  # training throughput since the previous report
    train_loss: float  # mean training loss since the previous report (trackers plot it; not a ledger column)
    current_lr: float  # the schedule's lr at this step (trackers plot it; the ledger's `lr` is the peak)
    trainable_params: int
    total_params: int
    dataset_fingerprint: str
    model_source: str
    wall_seconds: float
    checkpoint: str | None  # URI of the final tuned weights, once written
    resumed_at: tuple[int, ...]  # the steps this trial resumed from
    hardware: str  # JSON: host, cpus, accelerator (+ the Ray nodes of its ranks)
    pid: int
    curve: tuple[dict[str, float], ...]  # step, tokens, train_loss, val_loss, lr, tokens_per_s per evaluation

    def metrics(self) -> dict[str, Any]:
        """Plain values for `ray.train.report` / `tune.report`."""
        return {**asdict(self), "resumed_at": list(self.resumed_at), "curve": list(self.curve)}

    @classmethod
    def from_metrics(cls, metrics: dict[str, Any]) -> "TrialReport":
        """Back from a Tune result (which adds its own keys)."""
        values = {f.name: metrics[f.name] for f in fields(cls)}
        return cls(**{**values, "resumed_at": tuple(values["resumed_at"]), "curve": tuple(values["curve"])})
