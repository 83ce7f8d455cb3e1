"""The advice file: the runs `sweeper advise` chose, which `sweeper launch grid --with FILE` runs.

One owner for the format: `analysis.advice` writes it, the launcher reads it. A file names its sweep's
space and the runs: a method at a scale (one the grid may not have: the scale is added to the space),
or more seeds of a cell already run (`seeds`: the cell's new number of replicates; only the new ones
run, as trial ids carry the seed). The launch runs exactly those cells and records the advice it came
from in its manifest entry, with the forecast the advice was meant to improve.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import Field

from sweeper.core.config import Frozen
from sweeper.core.errors import UserError
from sweeper.core.io import atomic_write_text
from sweeper.plan import Plan, make_plan, only_cells
from sweeper.schema import Space


class AdvisedRun(Frozen):
    method: str
    scale: str
    seeds: Annotated[int, Field(ge=2)] | None = None  # more replicates of a cell already run


class AdviceFile(Frozen):
    advice: str  # the advice record's id: SWEEP/advice/<id>.json holds the candidates and the forecast
    space: str  # the space of the sweep it was made for
    runs: tuple[AdvisedRun, ...] = Field(min_length=1)
    target: str = ""  # what it was meant to improve, for the launch's record
    objective: str = ""
    before: float | None = None  # the objective when the advice was made
    expected_after: float | None = None  # and once these runs are in, as the advice expected


def write_advice_file(path: Path, advice: AdviceFile, header: str) -> None:
    body = yaml.safe_dump(advice.model_dump(mode="json", exclude_none=True), sort_keys=False)
    atomic_write_text(path, "".join(f"# {line}\n" for line in header.splitlines()) + body)


def read_advice_file(path: str) -> AdviceFile:
    file = Path(path)
    if not file.is_file():
        raise UserError(f"--with {path}: no such advice file (`sweeper advise` writes SWEEP/advice/<id>.yaml)")
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise UserError(f"--with {path}: not YAML ({str(err).splitlines()[0]})") from None
    return AdviceFile.parse(raw, f"--with {path}")


def with_advice(space: Space, advice: AdviceFile, path: str) -> tuple[Space, set[tuple[str, str]]]:
    """The space with the advised scales added and the advised seeds set, and the (method, scale) cells
    to run: exactly the advised ones."""
    if advice.space != space.name:
        raise UserError(f"--with {path}: the advice is for space {advice.space!r}, not {space.name!r}")
    unknown = sorted({run.method for run in advice.runs} - set(space.methods))
    if unknown:
        raise UserError(f"--with {path}: method(s) {', '.join(unknown)} not in space {space.name!r}; "
                        f"valid: {', '.join(space.methods)}")
    raw: dict[str, Any] = space.model_dump(mode="json")
    raw["scales"] = list(dict.fromkeys([*space.scales, *(run.scale for run in advice.runs)]))
    raw["overrides"] = [*raw.get("overrides", []), *(
        {"methods": [run.method], "scales": [run.scale], "set": {"seeds": run.seeds}}
        for run in advice.runs if run.seeds is not None)]
    return Space.parse(raw, f"--with {path}"), {(run.method, run.scale) for run in advice.runs}


def advised_plan(space: Space, path: str) -> tuple[Plan, dict[str, Any]]:
    """The plan of exactly an advice file's runs on `space`, and the advice as the launch records it."""
    advice = read_advice_file(path)
    advised_space, cells = with_advice(space, advice, path)
    return only_cells(make_plan(advised_space), cells), {"file": str(Path(path).resolve()), **advice.model_dump(mode="json")}
