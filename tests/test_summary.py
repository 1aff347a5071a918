"""Summaries of values (asignals._summary): bounded for any size, and
secrets masked wherever a name says so."""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, NamedTuple

import pytest
from markupsafe import Markup
from starlette.datastructures import FormData, Headers

from asignals._summary import MASK, argument, looks_secret, summary


@dataclasses.dataclass
class Login:
    user: str
    password: str


class Pair(NamedTuple):
    user: str
    api_key: str


class Shown:
    def __repr__(self) -> str:
        return "Shown(user='ada', Token=abc123, secret: 'x y', n=1)"


class Raises:
    def __repr__(self) -> str:
        raise RuntimeError("no")


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ({"user": "ada", "password": "p"}, "{'user': 'ada', 'password': ***}"),
        ({"outer": {"inner": {"API_KEY": 1}}}, "{'outer': {'inner': {'API_KEY': ***}}}"),
        ({b"password": 1}, "{b'password': ***}"),
        (collections.OrderedDict([("password", "p")]), "OrderedDict({'password': ***})"),
        (collections.defaultdict(int, {"token": 3}), "defaultdict({'token': ***})"),
        (
            Headers({"authorization": "Bearer t", "accept": "*/*"}),
            "Headers({'authorization': ***, 'accept': '*/*'})",
        ),
        (
            FormData([("password", "p"), ("name", "ada")]),
            "FormData({'password': ***, 'name': 'ada'})",
        ),
        (Login("ada", "p"), "Login(user='ada', password=***)"),
        (Pair("ada", "k"), "Pair(user='ada', api_key=***)"),
        ([("session_id", "s"), ("user", "ada")], "[('session_id', ***), ('user', 'ada')]"),
        (Shown(), "Shown(user='ada', Token=***, secret: ***, n=1)"),
        ("redis://:hunter2@db:6379/0", "'redis://:***@db:6379/0'"),
        ({"url": "postgres://ada:pw@host/db"}, "{'url': 'postgres://ada:***@host/db'}"),
        ("mail ada@example.com", "'mail ada@example.com'"),
    ],
)
def test_values_under_secret_names_are_masked(value: Any, shown: str) -> None:
    assert summary(value) == shown


def test_an_argument_with_a_secret_name_is_masked_whole() -> None:
    assert argument("csrf_token", {"anything": 1}) == MASK
    assert argument("user", "ada") == "'ada'"
    assert looks_secret("X-Auth-Token")
    assert not looks_secret("user")
    assert not looks_secret(3)


class Big(list):  # type: ignore[type-arg]
    pass


@pytest.mark.parametrize(
    "value",
    [
        "a" * 50_000_000,
        Markup("<b>") * 10_000_000,
        b"x" * 50_000_000,
        bytearray(50_000_000),
        memoryview(b"x" * 50_000_000),
        10**200_000,
        {n: n for n in range(1_000_000)},
        collections.OrderedDict((n, n) for n in range(1_000_000)),
        collections.Counter(range(1_000_000)),
        Big(range(1_000_000)),
        set(range(1_000_000)),
        collections.deque(range(1_000_000)),
        [[[[[[["deep"]]]]]]],
        {n: n for n in range(1_000_000)}.keys(),
        {n: n for n in range(1_000_000)}.items(),
    ],
    ids=lambda value: type(value).__name__,
)
def test_a_summary_is_short_whatever_the_value(value: Any) -> None:
    """Cut before it is copied or sorted: a few items, a few levels, each
    part about 100 characters, the whole about 400."""
    assert len(summary(value)) <= 400


def test_containers_that_hold_themselves_and_reprs_that_raise() -> None:
    looped: list[Any] = []
    looped.append(looped)
    assert summary(looped) == "[[[[...]]]]"
    assert summary(Raises()) == "<Raises object (its repr() raised)>"
    assert summary((1,)) == "(1,)"
    assert summary(set()) == "set()"
    assert summary(10**70) == repr(10**70)
    assert summary(2**300) == "<int of 301 bits>"
