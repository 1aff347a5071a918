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


@dataclasses.dataclass
class Hidden:
    name: str
    pin: str = dataclasses.field(repr=False)


@dataclasses.dataclass
class OwnRepr:
    dsn: str

    def __repr__(self) -> str:
        return "OwnRepr(<hidden>)"


class Request:
    def __repr__(self) -> str:
        return "Request(Authorization: Bearer eyJabc.def, x=1)"


class Url:
    def __repr__(self) -> str:
        return "AnyUrl('redis://u:hunter2@h:6379/0')"


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
        (Hidden("ada", "1234"), "Hidden(name='ada')"),
        (OwnRepr("password=x"), "OwnRepr(<hidden>)"),
        (Request(), "Request(Authorization: ***, x=1)"),
        ([["password", "p"]], "[['password', ***]]"),
        (Url(), "AnyUrl('redis://u:***@h:6379/0')"),
        ("redis://user:" + "p" * 200, "'redis://user:***...'"),
        ("redis://u:p@ss@host/0", "'redis://u:***@host/0'"),
        ("http://example.com:8080/x", "'http://example.com:8080/x'"),
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
    def __repr__(self) -> str:
        raise AssertionError("a list is shown by its first items, not its repr()")


class Endless(collections.OrderedDict):  # type: ignore[type-arg]
    """A mapping whose items past the ninth may not be looked at."""

    def items(self) -> Any:
        for n, item in enumerate(super().items()):
            assert n < 9, "read past the ninth item"
            yield item

    def __repr__(self) -> str:
        raise AssertionError("a mapping is shown by its first items, not its repr()")


MILLION = range(1_000_000)
A_HUNDRED_X = "x" * 100
EIGHT = "0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 7, ..."


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("x" * 50_000_000, f"'{A_HUNDRED_X}...'"),
        (Markup("x") * 10_000_000, f"'{A_HUNDRED_X}...'"),
        (b"x" * 50_000_000, f"b'{A_HUNDRED_X}...' (50,000,000 bytes)"),
        (bytearray(b"x" * 5_000_000), f"b'{A_HUNDRED_X}...' (5,000,000 bytes)"),
        (memoryview(b"x" * 5_000_000), f"b'{A_HUNDRED_X}...' (5,000,000 bytes)"),
        (10**200_000, "<int of 664,386 bits>"),
        ({n: n for n in MILLION}, "{" + EIGHT + "}"),
        (Endless((n, n) for n in MILLION), "Endless({" + EIGHT + "})"),
        (
            collections.Counter(MILLION),
            "Counter({0: 1, 1: 1, 2: 1, 3: 1, 4: 1, 5: 1, 6: 1, 7: 1, ...})",
        ),
        (Big(MILLION), "Big([0, 1, 2, 3, 4, 5, 6, 7, ...])"),
        (set(MILLION), "{0, 1, 2, 3, 4, 5, 6, 7, ...}"),
        (collections.deque(MILLION), "deque([0, 1, 2, 3, 4, 5, 6, 7, ...])"),
        ([[[[[[["deep"]]]]]]], "[[[[...]]]]"),
        ({n: n for n in MILLION}.keys(), "dict_keys([0, 1, 2, 3, 4, 5, 6, 7, ...])"),
    ],
    ids=lambda value: type(value).__name__,
)
def test_a_summary_shows_the_first_items_whatever_the_size(value: Any, shown: str) -> None:
    """Cut before it is copied or sorted: the first items of a container, a
    few levels, each string's first 100 characters."""
    assert summary(value) == shown


def test_containers_that_hold_themselves_and_reprs_that_raise() -> None:
    looped: list[Any] = []
    looped.append(looped)
    assert summary(looped) == "[[[[...]]]]"
    assert summary(Raises()) == "<Raises object (its repr() raised)>"
    assert summary((1,)) == "(1,)"
    assert summary(set()) == "set()"
    assert summary(10**70) == repr(10**70)
    assert summary(2**300) == "<int of 301 bits>"
