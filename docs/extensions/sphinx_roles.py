"""A griffe extension for the API reference: the docstrings' Sphinx roles
(``:class:`Signal```, ``:meth:`~Signal.send```) become code spans, which
Markdown shows as code, instead of showing the role's markup."""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|meth|func|data|mod|attr|exc|obj):`([^`]+)`")


def _code(match: re.Match[str]) -> str:
    target = match.group(1)
    shown = re.fullmatch(r"(.*?)\s*<.*>", target)
    if shown:
        target = shown.group(1)
    elif target.startswith("~"):
        target = target.rsplit(".", 1)[-1]
    return f"`{target}`"


class SphinxRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(_code, obj.docstring.value)
