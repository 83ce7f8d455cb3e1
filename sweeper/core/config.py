"""Typed, frozen, validated configuration: the base class and the error formatting every config uses.

Unknown keys are errors (`extra="forbid"`) and a validation failure becomes one `UserError` line
naming the source, the dotted field path and what was expected. Validation is lax on purpose: a
numeric string becomes its number, because PyYAML reads an unquoted `1e-4` as a string.
"""

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from sweeper.core.errors import UserError

M = TypeVar("M", bound="Frozen")


class Frozen(BaseModel):
    """Base of every config: immutable, unknown keys rejected, numeric strings read as numbers, finite."""

    # inf and nan are never a setting: `lr: .inf` or `timeout: nan` is a typo that would otherwise
    # plan, train or time out as if it were a number.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False, validate_default=True, allow_inf_nan=False)

    @classmethod
    def parse(cls: type[M], data: Any, source: str) -> M:
        """Validate `data` into `cls`, raising a one-line `UserError` that names `source` and the field."""
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            raise UserError(describe_validation_error(err, source, cls)) from None


def describe_validation_error(err: ValidationError, source: str, model: type[BaseModel]) -> str:
    """The first problem of a pydantic error as `source: field.path: what was expected (got X)`."""
    first = err.errors()[0]
    loc = tuple(part for part in first["loc"] if not str(part).startswith("function-"))
    where = ".".join(str(part) for part in loc)
    kind = first["type"]
    if kind == "extra_forbidden":
        parent, _, key = where.rpartition(".")
        allowed = _allowed_keys(model, loc[:-1])
        scope = f" in {parent}" if parent else ""
        expected = f"; expected one of: {', '.join(allowed)}" if allowed else ""
        return f"{source}: unknown key {key!r}{scope}{expected}"
    message = first["msg"].removeprefix("Value error, ")
    got = first.get("input")
    shown = "" if kind == "missing" or isinstance(got, dict | list) else f" (got {got!r})"
    return f"{source}: {where or 'top level'}: {message}{shown}"


def _allowed_keys(model: type[BaseModel] | None, loc: tuple) -> list[str]:
    """The field names of the model found by following `loc` down from `model` (dict keys skipped)."""
    for part in loc:
        if model is None:
            return []
        field = model.model_fields.get(str(part))
        if field is not None:
            model = model_in(field.annotation)
    return sorted(model.model_fields) if model else []


def model_in(annotation: Any) -> type[BaseModel] | None:
    """The config model a field's annotation holds (`Recipe`, `Recipe | None`, ...), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = model_in(arg)
        if found:
            return found
    return None


class _StrictLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys silently; a config with one is a mistake, not a choice."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: Path) -> Any:
    """Read a YAML file; a missing file, a syntax error or a duplicate key is a `UserError` with line
    and column."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        return yaml.load(path.read_text(), Loader=_StrictLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise UserError(f"{path}: malformed YAML at {where}: {err.problem}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: malformed YAML: {err}") from None
    except TypeError as err:  # a list or mapping used as a key (`? [a, b]`): yaml cannot hash it
        raise UserError(f"{path}: malformed YAML: a key must be a plain value ({err})") from None
