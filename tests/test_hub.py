"""Every loader that reads the HF hub fails the same way offline: one line naming the data, the reason and
what to pass instead (sweeper.core.hub.load_hub_dataset)."""

import pytest

from sweeper.core.errors import UserError
from sweeper.schema import DataConfig


@pytest.fixture
def unreachable(monkeypatch):
    import datasets

    def refuse(*_args, **_kwargs):
        raise ConnectionError("hub unreachable\nTraceback-like second line")

    monkeypatch.setattr(datasets, "load_dataset", refuse)


def loaders():
    from sweeper.data import SOURCES
    from sweeper.evals.problems import load_humanevalpack
    from sweeper.evals.tasks import aatk, codexglue, recode

    return {
        "guanaco-commits": (lambda: SOURCES.get("guanaco-commits").splits(DataConfig(source="guanaco-commits")),
                            "data.path"),
        "commitpackft": (lambda: SOURCES.get("commitpackft").examples(DataConfig(source="commitpackft")), "data.path"),
        "oasst": (lambda: SOURCES.get("oasst").examples(DataConfig(source="oasst")), "data.path"),
        "humanevalpack": (lambda: load_humanevalpack(None, "java"), "--data PATH"),
        "aatk": (lambda: aatk.load_scenarios(None), "--data PATH"),
        "recode": (lambda: (recode._load.cache_clear(), recode.load_recode("natgen"))[1], "--data PATH"),
        "codexglue": (lambda: codexglue._hub_split("google/code_x_glue_cc_defect_detection", "defect-detection"),
                      "--data DIR"),
    }


@pytest.mark.parametrize("name", ["guanaco-commits", "commitpackft", "oasst", "humanevalpack", "aatk", "recode", "codexglue"])
def test_offline_hub_loads_fail_with_one_line_saying_what_to_do(unreachable, name):
    load, hint = loaders()[name]
    with pytest.raises(UserError) as err:
        load()
    message = str(err.value)
    assert message.startswith("cannot load ") and "(hub unreachable)" in message and hint in message, message
    assert "\n" not in message
