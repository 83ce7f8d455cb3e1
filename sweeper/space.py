"""Search spaces: load a YAML grid (a shipped name or a path), apply `--set`, select, expand into cells.

A space names the ladder and its scales, the methods (each with its own settings), the instruction
data, the training recipe, early stopping, optional per-cell search ranges, resources per trial, the
cost assumptions and a budget (the schema: `sweeper.schema`). `overrides` change the resolved config
of chosen cells (e.g. ZeRO-3 for full fine-tuning of the largest scales); `--set key.path=value`
changes any field of the space. Loading checks the ladder, scale, method and data-source names up
front, so a typo is one line before anything is planned.
"""

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from sweeper.core.config import load_yaml, model_in
from sweeper.core.errors import UserError
from sweeper.core.memo import DiskMemo
from sweeper.core.paths import PROJECT_ROOT
from sweeper.data import SOURCES
from sweeper.ladders import get_ladder
from sweeper.schema import Cell, Space


def spaces_dir() -> Path:
    """The shipped spaces: package data of an installed wheel (`sweeper/search_spaces/`, mapped from the
    checkout's top-level search_spaces/ by pyproject.toml), else the checkout's own folder (an editable
    install or a plain checkout)."""
    installed = Path(__file__).resolve().parent / "search_spaces"
    return installed if installed.is_dir() else PROJECT_ROOT / "search_spaces"


def resolve_space_path(name_or_path: str) -> Path:
    """A path to a YAML file, or the name of a shipped space (`micro` -> search_spaces/micro.yaml)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    shipped = spaces_dir() / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    names = sorted(p.stem for p in spaces_dir().glob("*.yaml"))
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
    check_names(space)
    return space


def check_names(space: Space) -> None:
    """The ladder, its scales and the data source must be registered, and the source must have what it mines:
    one line each if not. Method names
    are checked when the cells are expanded (resolving them needs torch and peft; `expand` remembers)."""
    ladder = get_ladder(space.ladder)
    for scale in space.scales:
        ladder.scale(scale)
    if SOURCES.get(space.data.source).needs_files(space.data) and not ladder.has_instruction_files:
        raise UserError(f"data.path: the {space.data.source} source needs a folder of Python files with ladder "
                        f"{ladder.name!r} (only the micro ladders hold code of their own out of pretraining)")


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
