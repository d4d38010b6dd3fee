"""Event filters: wiki names and wildcard patterns, types, namespaces, bot."""

from __future__ import annotations

import pytest

from stream_processor.serving.filters import EVERYTHING, FilterError, parse_filter


def event(server_name="en.wikipedia.org", wiki="enwiki", type_="edit", namespace=0, bot=False) -> dict:
    return {"server_name": server_name, "wiki": wiki, "type": type_, "namespace": namespace, "bot": bot}


@pytest.mark.parametrize(
    ("wikis", "passes"),
    [
        ("*", True),
        ("en.wikipedia.org", True),
        ("enwiki", True),
        ("*.wikipedia.org", True),
        ("en.*", True),
        ("e?wiki", True),
        ("[de]nwiki", True),
        ("de.wikipedia.org", False),
        ("*.wiktionary.org", False),
        ("EN.*", False),  # case-sensitive
        (["dewiki", "*.wiktionary.org"], False),
        (["dewiki", "en.wiki*"], True),
        (["dewiki", "*"], True),
    ],
)
def test_wikis_match_the_server_name_or_the_wiki_by_name_or_pattern(wikis, passes):
    assert parse_filter({"wikis": wikis}).matches(event()) is passes


def test_every_filter_given_must_pass_and_a_list_passes_when_any_of_it_does():
    only = parse_filter({"wikis": "*.wikipedia.org", "type": ["new", "edit"], "namespace": [0, 1], "bot": False})
    assert only.matches(event())
    assert not only.matches(event(type_="log"))
    assert not only.matches(event(namespace=2))
    assert not only.matches(event(bot=True))
    assert not only.matches(event(server_name="commons.wikimedia.org", wiki="commonswiki"))
    assert parse_filter({"bot": [True, False]}).matches(event(bot=True))


def test_an_event_missing_a_filtered_field_does_not_pass_that_filter():
    assert not parse_filter({"namespace": 0}).matches({"wiki": "enwiki"})
    assert not parse_filter({"bot": False}).matches({"wiki": "enwiki", "bot": 0})  # 0 is not false
    assert not parse_filter({"namespace": 1}).matches({"namespace": True})  # true is not namespace 1
    assert parse_filter({"wikis": "*"}).matches({})


def test_a_line_that_is_not_an_event_passes_only_an_empty_filter():
    assert EVERYTHING.matches(None) and parse_filter({}).matches(None)
    assert not parse_filter({"wikis": "en.*"}).matches(None)


@pytest.mark.parametrize(
    "fields",
    [
        {"wikis": []},
        {"wikis": ""},
        {"wikis": [1]},
        {"wikis": "x" * 201},
        {"wikis": ["w"] * 101},
        {"type": 5},
        {"type": []},
        {"namespace": "0"},
        {"namespace": True},
        {"namespace": 1.5},
        {"bot": "yes"},
        {"bot": 1},
    ],
)
def test_a_filter_that_cannot_be_used_is_refused_saying_why(fields):
    with pytest.raises(FilterError) as refused:
        parse_filter(fields)
    assert str(refused.value) and len(str(refused.value)) < 300
