"""Starlette's app class as Starlette defines it.

OpenTelemetry's Starlette and FastAPI instrumentors, instrumenting every
app, put a subclass of their own in ``starlette.applications`` (and
``fastapi``) in its place: an app made before that is no instance of it, and
asignals must still know it for a Starlette app.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.applications import Starlette
else:
    from starlette import applications

    Starlette = next(
        kind
        for kind in applications.Starlette.__mro__
        if kind.__module__ == "starlette.applications" and kind.__name__ == "Starlette"
    )

__all__ = ["Starlette"]
