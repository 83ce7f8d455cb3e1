import pytest

from sweeper.core.errors import UserError
from sweeper.schema import Cell
from sweeper.space import apply_set, expand, load_space, parse_value, select

ASTRAIOS_METHODS = ["fft", "lora", "ptuning", "ia3", "adapterh", "adapterp", "parallel"]

MINIMAL = """\
name: tiny
ladder: starcoderbase
scales: [1b, 3b]
methods:
  fft: {}
  lora: {r: 4}
data:
  source: guanaco-commits  # the default local-code source has no code to mine with a hub ladder
recipe:
  steps: 20
  warmup_steps: 2
  eval_every: 5
"""


def test_shipped_spaces_are_the_7x4_grids():
    for name in ("micro", "astraios"):
        space = load_space(name)
        cells = expand(space)
        assert len(cells) == 28
        assert sorted(space.methods) == sorted(ASTRAIOS_METHODS)
        assert len({cell.id for cell in cells}) == 28


def test_astraios_space_has_the_paper_recipe():
    recipe = load_space("astraios").recipe
    assert (recipe.lr, recipe.schedule, recipe.warmup_steps, recipe.weight_decay) == (1e-4, "cosine", 12, 0.05)
    assert (recipe.steps, recipe.global_batch, recipe.eval_every, recipe.seed) == (200, 32, 10, 0)
    assert load_space("astraios").data.seq_len == 2048


def test_astraios_overrides_shard_the_large_full_fine_tunes():
    cells = {(c.method, c.scale): c for c in expand(load_space("astraios"))}
    assert cells["fft", "15b"].recipe.zero_stage == 3
    assert cells["fft", "15b"].resources.workers == 8
    assert cells["fft", "1b"].recipe.zero_stage == 0
    assert cells["lora", "15b"].recipe.zero_stage == 0


@pytest.mark.parametrize("key", ["recipe.nope", "recipe.lr.x", "nope.lr"])
def test_an_override_of_a_field_cells_do_not_have_is_refused(write_space, key):
    path = write_space(MINIMAL + f"overrides:\n  - scales: [3b]\n    set: {{{key}: 1}}\n")
    with pytest.raises(UserError, match=f"tiny: overrides\\[0\\]: set: '{key}' is not a field of a cell"):
        expand(load_space(str(path)))


def test_an_override_reaches_only_its_cells_and_may_set_method_fields(write_space):
    path = write_space(MINIMAL + "overrides:\n  - scales: [3b]\n    methods: [lora]\n    set: {method_config.r: 8}\n")
    cells = {(c.method, c.scale): c for c in expand(load_space(str(path)))}
    assert cells["lora", "3b"].method_config["r"] == 8 and cells["lora", "1b"].method_config["r"] == 4


def test_cell_id_is_stable_and_changes_with_any_science_field(write_space):
    path = write_space(MINIMAL)
    first = {(c.method, c.scale): c.id for c in expand(load_space(str(path)))}
    again = {(c.method, c.scale): c.id for c in expand(load_space(str(path)))}
    assert first == again
    for assignment in ("recipe.lr=2e-4", "recipe.seed=1", "data.seq_len=128", "methods.lora.r=8"):
        changed = {(c.method, c.scale): c.id for c in expand(load_space(str(path), [assignment]))}
        assert changed["lora", "1b"] != first["lora", "1b"], assignment


def test_cell_id_ignores_resources_and_space_name(write_space):
    path = write_space(MINIMAL)
    base = expand(load_space(str(path)))[0]
    moved = expand(load_space(str(path), ["resources.cpus_per_worker=2", "name=other"]))[0]
    assert base.id == moved.id


def test_cell_id_is_a_hash_of_the_resolved_config():
    cell = expand(load_space("micro"))[0]
    rebuilt = Cell.model_validate(cell.model_dump())
    assert rebuilt.id == cell.id
    assert len(cell.id) == 12 and int(cell.id, 16) >= 0


def test_set_overrides_and_value_parsing(write_space):
    path = write_space(MINIMAL)
    space = load_space(str(path), ["recipe.lr=3e-4", "recipe.precision=fp32", "budget_usd=10"])
    assert space.recipe.lr == pytest.approx(3e-4)
    assert space.recipe.precision == "fp32"
    assert space.budget_usd == 10
    assert parse_value("3e-4") == pytest.approx(3e-4)
    assert parse_value("[1, 2]") == [1, 2]
    assert parse_value("true") is True


def test_set_on_a_method_field_reaches_its_config(write_space):
    cells = expand(load_space(str(write_space(MINIMAL)), ["methods.lora.r=16"]))
    assert {c.method_config["r"] for c in cells if c.method == "lora"} == {16}


def test_select_sub_grid(write_space):
    space = select(load_space(str(write_space(MINIMAL))), ["lora"], ["3b"])
    assert [(c.method, c.scale) for c in expand(space)] == [("lora", "3b")]


@pytest.mark.parametrize(
    ("text_change", "sets", "expected"),
    [
        (("recipe:", "recipe:\n  colour: blue"), [], "unknown key 'colour' in recipe; expected one of:"),
        (("steps: 20", "steps: many"), [], "recipe.steps"),
        (("lora: {r: 4}", "lorra: {}"), [], "unknown method 'lorra'; valid methods: fft, lora"),
        (("[1b, 3b]", "[1b, 2b]"), [], "no scale '2b'; valid scales: 1b, 3b, 7b, 15b"),
        (("[1b, 3b]", "[]"), [], "the grid is empty"),
        (("ladder: starcoderbase", "ladder: gpt9"), [], "unknown ladder 'gpt9'; valid ladders:"),
        (("warmup_steps: 2", "warmup_steps: 30"), [], "warmup_steps (30) must be below steps (20)"),
        (("steps: 20", "steps: 20\n  steps: 30"), [], "line 11, column 3: duplicate key 'steps'"),
        ((None, None), ["recipe.colour=1"], "recipe has no field 'colour'"),
        ((None, None), ["budget_usd=-5"], "budget_usd"),
        ((None, None), ["recipe.lr"], "expected key.path=value"),
        ((None, None), ["methods.lora.rank=4"], "rank"),
    ],
)
def test_bad_space_input_is_one_clear_line(write_space, text_change, sets, expected):
    old, new = text_change
    text = MINIMAL.replace(old, new) if old else MINIMAL
    path = write_space(text)
    with pytest.raises(UserError) as caught:
        expand(load_space(str(path), sets))
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message


def test_malformed_yaml_names_line_and_column(write_space):
    path = write_space("name: x\nscales: [1b, 3b\nmethods: {}\n")
    with pytest.raises(UserError, match=r"malformed YAML at line \d+, column \d+"):
        load_space(str(path))


def test_missing_file_and_unknown_space_name():
    with pytest.raises(UserError, match="file not found"):
        load_space("/nonexistent/space.yaml")
    with pytest.raises(UserError, match=r"shipped spaces are .*astraios.*micro"):
        load_space("no-such-space")


def test_batch_must_divide_over_workers_and_accumulation(write_space):
    path = write_space(MINIMAL)
    with pytest.raises(UserError, match=r"global_batch \(32\) must be a multiple"):
        expand(load_space(str(path), ["recipe.micro_batch=5"]))


def test_apply_set_does_not_mutate_its_input():
    raw = {"recipe": {"lr": 1.0}}
    apply_set(raw, "recipe.lr=2")
    assert raw == {"recipe": {"lr": 1.0}}


def test_cell_id_ignores_the_number_of_seeds(write_space):
    path = write_space(MINIMAL)
    one = {(c.method, c.scale): c for c in expand(load_space(str(path)))}
    three = {(c.method, c.scale): c for c in expand(load_space(str(path), ["seeds=3"]))}
    assert {key: c.seeds for key, c in one.items()} == dict.fromkeys(one, 1)
    assert {key: c.seeds for key, c in three.items()} == dict.fromkeys(one, 3)
    assert {key: c.id for key, c in three.items()} == {key: c.id for key, c in one.items()}


def test_an_override_sets_the_seeds_of_its_cells_only(write_space):
    path = write_space(MINIMAL + "overrides:\n  - methods: [lora]\n    scales: [3b]\n    set: {seeds: 3}\n")
    cells = {(c.method, c.scale): c.seeds for c in expand(load_space(str(path)))}
    assert cells == {("fft", "1b"): 1, ("fft", "3b"): 1, ("lora", "1b"): 1, ("lora", "3b"): 3}


@pytest.mark.parametrize("value", ["0", "-1", "2.5", "x", "true"])
def test_bad_seeds_are_one_clear_line_naming_the_field(write_space, value):
    top = write_space(f"seeds: {value}\n" + MINIMAL, "top.yaml")
    override = write_space(MINIMAL + f"overrides:\n  - methods: [lora]\n    set: {{seeds: {value}}}\n", "override.yaml")
    for path, where in ((top, "top.yaml: seeds: "), (override, "tiny: cell lora/1b: seeds: ")):
        with pytest.raises(UserError) as caught:
            expand(load_space(str(path)))
        message = str(caught.value)
        assert where in message and f"(got {parse_value(value)!r})" in message and "\n" not in message
