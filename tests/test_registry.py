"""The generic registry behind prototypes, students and data sources."""

from __future__ import annotations

import pytest

from coopt_flower.registry import Registry


class LookupFailed(ValueError):
    pass


@pytest.fixture
def reg() -> Registry:
    reg = Registry("widget", error=LookupFailed)
    reg.add("plain", lambda size=1: ("plain", size))
    reg.add("pre", lambda body, size=1: ("pre", body, size), prefix=True, forms=("pre:BODY",))
    return reg


def test_register_decorator_returns_the_function_and_records_it(reg):
    @reg.register("made")
    def make():
        return "made"

    assert make() == "made"  # the decorator returns the function unchanged
    assert reg.get("made") is make
    assert reg.create("made") == "made"
    assert "made" in reg and "made" in reg.names()


def test_plain_names_and_prefix_families_dispatch(reg):
    assert reg.create("plain", size=3) == ("plain", 3)
    # A prefix family receives everything after the first separator as its body.
    assert reg.create("pre:a:b/c@d", size=2) == ("pre", "a:b/c@d", 2)
    entry, body = reg.resolve("  pre:x  ")
    assert (entry.name, entry.prefix, body) == ("pre", True, "x")
    entry, body = reg.resolve("plain")
    assert (entry.name, entry.prefix, body) == ("plain", False, "plain")
    assert "pre:anything" in reg and "nope:x" not in reg and 3 not in reg


def test_plain_name_wins_over_a_prefix():
    reg = Registry("widget")
    reg.add("a", "family", prefix=True)
    reg.add("a-b", "name")
    assert reg.resolve("a-b")[0].value == "name"
    assert reg.resolve("a:b")[0].value == "family"


def test_unknown_names_list_known_names_and_forms(reg):
    with pytest.raises(LookupFailed) as err:
        reg.resolve("foo")
    message = str(err.value)
    assert message.startswith("unknown widget 'foo'. ")
    assert "Known: plain" in message and "forms: pre:BODY" in message
    with pytest.raises(LookupFailed, match=r"unknown widget prefix 'bad' in 'bad:x'\. Known: plain"):
        reg.create("bad:x")
    with pytest.raises(LookupFailed, match="custom advice"):
        raise reg.unknown("foo", "custom advice")


def test_listings_keep_registration_order_and_skip_repeats():
    reg = Registry("widget", prefix_noun="family")
    reg.add("fam", 1, prefix=True, forms=("x0", "x1", "fam:NAME"))
    reg.add("x0", 1, forms=())  # an alias already listed by its family's forms
    reg.add("x1", 1, forms=())
    reg.add("zz", 2)
    reg.add("other", 3, prefix=True)
    assert reg.forms() == ["x0", "x1", "fam:NAME", "zz", "other:NAME"]
    assert reg.names() == ["x0", "x1", "zz"] and reg.prefixes() == ["fam", "other"]
    # Forms that are plain names are listed once, under "Known".
    assert reg.describe() == "Known: x0, x1, zz; forms: fam:NAME, other:NAME"
    assert "unknown widget family 'nope'" in str(reg.unknown("nope:1"))
    assert Registry("widget").describe() == "No widget is registered"


def test_empty_specs_and_bodies_are_malformed():
    reg = Registry("widget", error=LookupFailed, malformed_error=TypeError)
    reg.add("pre", lambda body: body, prefix=True)
    reg.add("opt", lambda body: body or "default", prefix=True, body_required=False)
    with pytest.raises(TypeError, match="missing a name after 'pre:'"):
        reg.resolve("pre:")
    with pytest.raises(TypeError, match="missing a name after 'pre:'"):
        reg.resolve("pre")
    with pytest.raises(TypeError, match="empty widget spec"):
        reg.resolve("  ")
    assert reg.create("opt") == "default" and reg.create("opt:") == "default"
    assert reg.create("opt:v") == "v"


def test_names_are_checked_and_duplicates_refused(reg):
    with pytest.raises(ValueError, match="must not contain ':'"):
        reg.register("has:colon")  # refused before the decorator is applied
    with pytest.raises(ValueError, match="must not contain"):
        reg.add("", 1)
    with pytest.raises(ValueError, match="widget 'plain' is already registered"):
        reg.add("plain", 2)
    with pytest.raises(ValueError, match="widget prefix 'pre' is already registered"):
        reg.add("pre", 2, prefix=True)
    reg.add("plain", 2, replace=True)
    assert reg.get("plain") == 2
    # The same word may be a plain name and a prefix at once.
    reg.add("pre", 5)
    assert reg.resolve("pre")[0].value == 5 and reg.resolve("pre:x")[0].prefix


def test_unregister(reg):
    entry = reg.unregister("pre", prefix=True)
    assert entry.name == "pre" and "pre:x" not in reg and "pre:BODY" not in reg.forms()
    with pytest.raises(LookupFailed):
        reg.unregister("pre", prefix=True)
    with pytest.raises(LookupFailed, match="unknown widget 'ghost'"):
        reg.get("ghost")


def test_the_three_project_registries_share_the_idiom():
    from coopt_flower.data import DATA_SOURCES, DataSourceError
    from coopt_flower.prototypes import PROTOTYPE_FAMILIES, UnknownPrototypeError
    from coopt_flower.students import STUDENTS

    assert isinstance(DATA_SOURCES, Registry) and DATA_SOURCES.error is DataSourceError
    assert isinstance(STUDENTS, Registry) and {"small-cnn", "resnet18-small"} <= set(STUDENTS.names())
    assert {"torchvision", "timm"} <= set(STUDENTS.prefixes())
    assert isinstance(PROTOTYPE_FAMILIES, Registry) and PROTOTYPE_FAMILIES.error is UnknownPrototypeError
    assert PROTOTYPE_FAMILIES.prefixes() == ["efficientnet-lite", "open_clip", "onnx", "timm", "torchvision",
                                            "random", "student"]
    assert {"fashion-mnist", "folder", "hf"} == set(DATA_SOURCES.prefixes())
