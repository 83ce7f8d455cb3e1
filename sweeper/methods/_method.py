"""What a tuning method is: a name, a config class, and `apply(model, config) -> model`.

A method's settings come from YAML. They are validated against its config class (a `Frozen` pydantic
model for sweeper's own methods, the peft config dataclass for peft methods) and turned back into a
plain, sorted, JSON-ready dict: that dict is hashed into the cell id, so it must hold every default
and be the same in every process (no sets, no enum objects).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from sweeper.core.config import describe_validation_error
from sweeper.core.errors import UserError
from sweeper.schema import trains_base

if TYPE_CHECKING:
    from torch import nn


@dataclasses.dataclass(frozen=True)
class Method:
    """One tuning method.

    `defaults` are sweeper's defaults on top of the config class's own (the Astraios settings, the
    GPTBigCode target modules); `fixed` are values sweeper sets itself and the user cannot change (the
    peft task type); `settable` are the field names a YAML may set.
    """

    name: str
    description: str
    config_cls: type
    apply: Callable[[nn.Module, Any], nn.Module]
    settable: tuple[str, ...]
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # Counting builds the method with `torch.device("meta")` as the default device, which makes random
    # inits free (FourierFT draws a randperm over every weight entry: 11 s on StarCoderBase-1B without
    # it); a few methods read values of tensors they create (BOFT: .item()) and need real ones.
    count_under_meta_device: bool = True

    @property
    def frozen_base(self) -> bool:
        """Whether the base's weights stay frozen (the FLOP and memory estimates need it): the one rule is
        `sweeper.schema.trains_base`, which planning reads without loading the methods."""
        return not trains_base(self.name)

    def parse_config(self, settings: Mapping[str, Any] | None, source: str) -> Any:
        """Validate YAML settings into a config object; a bad field is a one-line `UserError`."""
        settings = {} if settings is None else settings
        if not isinstance(settings, Mapping):
            raise UserError(f"{source}: expected a mapping of {self.name} settings (got {settings!r})")
        for key in settings:
            if key not in self.settable:
                raise UserError(
                    f"{source}: unknown field {key!r} for method {self.name!r}; "
                    f"valid fields: {', '.join(sorted(self.settable))}"
                )
        # peft declares some fields `int = None` (P-Tuning's encoder width: "the model's"), so a resolved
        # config holds nulls its own type rejects: null there means the default.
        unset = _none_defaults(self.config_cls)
        given = {key: value for key, value in settings.items() if not (value is None and key in unset)}
        try:
            return _adapter(self.config_cls).validate_python({**self.defaults, **given, **self.fixed})
        except ValidationError as err:
            schema = self.config_cls if issubclass(self.config_cls, BaseModel) else BaseModel
            raise UserError(describe_validation_error(err, source, schema)) from None

    def config_dict(self, config: Any) -> dict[str, Any]:
        """The settable fields of a parsed config as a sorted, JSON-ready dict (hashed into the cell id)."""
        dumped = config.model_dump() if isinstance(config, BaseModel) else dataclasses.asdict(config)
        resolved = {key: _canonical(dumped[key]) for key in sorted(self.settable)}
        json.dumps(resolved)  # fails loudly if a config ever holds something JSON cannot carry
        return resolved


@functools.cache
def _adapter(config_cls: type) -> TypeAdapter:
    # Building a TypeAdapter compiles a schema (milliseconds); planning validates the same class often.
    return TypeAdapter(config_cls)


@functools.cache
def _none_defaults(config_cls: type) -> frozenset[str]:
    """Fields of a dataclass config whose default is None."""
    if not dataclasses.is_dataclass(config_cls):
        return frozenset()
    return frozenset(field.name for field in dataclasses.fields(config_cls) if field.default is None)


def _canonical(value: Any) -> Any:
    """A process-independent JSON value: enums by value, sets sorted, tuples as lists, dicts key-sorted."""
    if isinstance(value, enum.Enum):
        return _canonical(value.value)
    if isinstance(value, set | frozenset):
        return sorted((_canonical(item) for item in value), key=json.dumps)
    if isinstance(value, list | tuple):
        return [_canonical(item) for item in value]
    if isinstance(value, Mapping):
        return {str(key): _canonical(value[key]) for key in sorted(value, key=str)}
    return value
