import pytest

from herobench.errors import HerobenchError, UnknownNameError
from herobench.registry import Registry


def make() -> Registry:
    reg = Registry("task")
    reg.register("hand", lambda: "hand-factory")

    @reg.register("blue-rose")
    def blue_rose():
        return "rose"

    assert blue_rose() == "rose"  # the decorator returns the function unchanged
    return reg


def test_register_get_names_contains():
    reg = make()
    assert reg.get("hand")() == "hand-factory"
    assert reg.get("blue-rose")() == "rose"
    assert reg.names() == ["blue-rose", "hand"]
    assert list(reg) == ["blue-rose", "hand"] and len(reg) == 2
    assert "hand" in reg and "foot" not in reg and 3 not in reg


def test_unknown_name_suggests_the_closest():
    with pytest.raises(UnknownNameError) as e:
        make().get("hnad")
    assert str(e.value) == "unknown task 'hnad'; did you mean 'hand'? (known: blue-rose, hand)"
    assert isinstance(e.value, HerobenchError)


def test_unknown_name_without_close_match_has_no_suggestion():
    with pytest.raises(UnknownNameError) as e:
        make().get("zzzzzz")
    assert "did you mean" not in str(e.value) and "(known: blue-rose, hand)" in str(e.value)
    with pytest.raises(UnknownNameError, match=r"\(known: none\)"):
        Registry("method").get("hero")


def test_duplicate_or_empty_names_are_programming_errors():
    reg = make()
    with pytest.raises(ValueError, match="already registered"):
        reg.register("hand", lambda: None)
    with pytest.raises(ValueError, match="non-empty"):
        reg.register("", lambda: None)


def test_a_name_in_the_wrong_case_gets_a_suggestion():
    from herobench.registry import unknown_name_message

    msg = unknown_name_message("method", "HERO", ["ddpo", "hero", "hero-no-fgg"])
    assert "did you mean 'hero'?" in msg
