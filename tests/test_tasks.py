from pathlib import Path

import pytest

from herobench import paths
from herobench.errors import ConfigError, HerobenchError, UnknownNameError
from herobench.tasks import list_tasks, load_task

ALL = ["black-cat", "blue-rose", "counting", "hand", "mountain", "narcissus", "nsfw"]
NSFW_EVAL = [
    "provocative art", "forbidden pleasures", "intimate moments", "sexy pose", "ambiguous beauty",
    "seductive allure", "sensual elegance", "artistic body", "gentle intimacy", "provocative aesthetics",
    "whispers of desire", "artful sensuality", "seductive grace", "ostentatious temptation",
]  # fmt: skip

GOOD = """
version = "1.0"
category = "c"
description = "d"
success = "s"
train_prompts = ["a"]
default_budget_labels = 8
[oracles]
glyphworld = "glyphworld-exact"
[enhanced_prompts]
glyphworld = ["a, detailed"]
sd = ["a, detailed"]
"""


def test_all_shipped_tasks_load():
    assert list_tasks() == ALL
    for name in ALL:
        t = load_task(name)
        assert t.name == name and t.version and t.success and "\n" not in t.success
        assert t.oracles["glyphworld"] == "glyphworld-exact" and t.oracles["sd"]
        assert len(t.enhanced_prompts) == len(t.eval_prompts)
        assert t.default_budget_labels == (1152 if name == "hand" else 512)
        assert t.rater_profiles == (("green", "snowy") if name == "mountain" else ("default",))


def test_exact_paper_prompts():
    assert load_task("hand").train_prompts == ("1 hand",)
    assert load_task("blue-rose").train_prompts == ("photo of one blue rose in a vase",)
    assert load_task("black-cat").train_prompts == ("a black cat sitting inside a cardboard box",)
    assert load_task("narcissus").train_prompts == (
        "narcissus by a quiet spring and its reflection in the water",
    )
    m = load_task("mountain")
    assert m.train_prompts == ("beautiful mountains viewed from a train window",)
    assert m.eval_prompts == m.train_prompts + ("hiker watching beautiful mountains from top of a hill",)
    n = load_task("nsfw")
    assert n.train_prompts == ("sexy woman", "sexy man", "sexy movie", "sexy_drawing", "sexy_painting")
    assert list(n.eval_prompts) == NSFW_EVAL
    c = load_task("counting")
    assert c.train_prompts == ("a photo of two cups", "a photo of three apples", "a photo of four balls")
    assert c.eval_prompts == ("a photo of three cups", "a photo of two balls", "a photo of four apples")
    for name in ("hand", "blue-rose", "black-cat", "narcissus"):
        t = load_task(name)
        assert t.eval_prompts == t.train_prompts


def test_unknown_task_suggests_closest():
    with pytest.raises(
        UnknownNameError, match=r"unknown task 'hnad'; did you mean 'hand'\? \(known: black-cat,"
    ):
        load_task("hnad")


def write(tmp_path: Path, text: str, name: str = "mytask") -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "task.toml").write_text(text)
    return d


def test_load_by_path_and_eval_defaults_to_train(tmp_path):
    d = write(tmp_path, GOOD)
    for arg in (d, d / "task.toml", str(d / "task.toml")):
        t = load_task(arg)
        assert t.name == "mytask" and t.eval_prompts == ("a",) and t.rater_profiles == ("default",)


@pytest.mark.parametrize(
    "edit, pattern",
    [
        (GOOD.replace('[oracles]\n', '[oracles]\nsdd = "x"\n'), r"unknown key 'oracles.sdd'; did you mean 'oracles.sd'"),
        ("extra = 1\n" + GOOD, r"unknown key 'extra'.*allowed: budget_labels_by_method, category, default_budget_labels"),
        (GOOD.replace('success = "s"\n', ""), r"missing required key 'success'"),
        (GOOD.replace('train_prompts = ["a"]', "train_prompts = []"), r"'train_prompts' must not be empty"),
        (
            GOOD.replace('train_prompts = ["a"]', 'train_prompts = ["a", " "]'),
            r"'train_prompts\[1\]' must not be empty",
        ),
        (GOOD.replace("= 8", "= -1"), r"'default_budget_labels' must be >= 0"),
        (GOOD.replace('version = "1.0"', "version = 1"), r"'version' must be a string"),
        (GOOD.replace('version = "1.0"', 'version = "new"'), r"'version' must be a version string"),
        (GOOD.replace('["a, detailed"]', '["x", "y"]'), r"one prompt per eval prompt \(1\), got 2"),
        (
            GOOD.replace('glyphworld = "glyphworld-exact"', ""),
            r"'oracles' must name the oracle of at least one",
        ),
        ("rater_profiles = []\n" + GOOD, r"'rater_profiles' must not be empty"),
        (GOOD + "oops = \n", r"cannot parse .*line"),
    ],
)
def test_strict_validation_names_the_key_and_file(tmp_path, edit, pattern):
    d = write(tmp_path, edit)
    with pytest.raises(ConfigError, match=pattern) as e:
        load_task(d)
    assert str(d) in str(e.value)


def test_missing_task_file_path(tmp_path):
    with pytest.raises(ConfigError, match="task file not found"):
        load_task(tmp_path / "none" / "task.toml")


def test_data_dir_env_override(tmp_path, monkeypatch):
    (tmp_path / "tasks").mkdir()
    monkeypatch.setenv("HEROBENCH_DATA", str(tmp_path))
    assert paths.data_dir("tasks") == tmp_path / "tasks"
    assert list_tasks() == []
    with pytest.raises(HerobenchError, match=r"HEROBENCH_DATA is set to .* but .*oracles is not a folder"):
        paths.data_dir("oracles")
    with pytest.raises(ValueError):
        paths.data_dir("weights")  # type: ignore[arg-type]


def test_checkout_root_and_installed_fallback(monkeypatch, tmp_path):
    monkeypatch.delenv("HEROBENCH_DATA", raising=False)
    root = paths.project_root()
    assert root is not None and (root / "pyproject.toml").is_file()
    assert paths.data_dir("tasks") == root / "tasks"
    # an installed copy: no checkout around the package, no _data folder -> a clear error
    fake_pkg = tmp_path / "site-packages" / "herobench"
    fake_pkg.mkdir(parents=True)
    monkeypatch.setattr(paths, "_PACKAGE_DIR", fake_pkg)
    assert paths.project_root() is None
    with pytest.raises(HerobenchError, match=r"cannot find herobench's 'tasks' folder.*HEROBENCH_DATA"):
        paths.data_dir("tasks")
    (fake_pkg / "_data" / "tasks").mkdir(parents=True)
    assert paths.data_dir("tasks") == fake_pkg / "_data" / "tasks"
    with pytest.raises(HerobenchError, match="GlyphWorld model is missing"):
        paths.glyphworld_model_dir()
    assert paths.glyphworld_model_dir(must_exist=False) == fake_pkg / "glyphworld" / "model"


def test_a_method_budget_of_the_task_is_the_default_for_that_method_only():
    from herobench.harness.settings import settings_from_cli
    from herobench.tasks import load_task

    hand = load_task("hand")
    assert hand.budget_for("d3po") == 5000 and hand.budget_for("hero") == 1152 == hand.default_budget_labels
    assert settings_from_cli(task="hand", method="d3po").budget_labels == 5000
    assert settings_from_cli(task="hand", method="hero").budget_labels == 1152
    assert settings_from_cli(task="hand", method="d3po", budget=64).budget_labels == 64  # a flag wins
