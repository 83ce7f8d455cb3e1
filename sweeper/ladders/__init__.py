"""Model ladders: the registry and its entries (`starcoderbase`, `micro`, `micro-smoke`).

Importing the package registers every shipped ladder; each entry imports only `ladders.base`.
"""

from sweeper.ladders import starcoderbase  # noqa: F401 (registers `starcoderbase`)
from sweeper.ladders.base import (
    LADDERS,
    Arch,
    Ladder,
    LoadedModel,
    Scale,
    count_parameters,
    get_ladder,
    meta_model,
)
from sweeper.ladders.micro import ladder  # noqa: F401 (registers `micro` and `micro-smoke`)

__all__ = ["LADDERS", "Arch", "Ladder", "LoadedModel", "Scale", "count_parameters", "get_ladder", "meta_model"]
