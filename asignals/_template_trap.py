"""The warning for an app that asignals serves but that renders with
Starlette's own ``Jinja2Templates`` (FastAPI's is the same class): it sends no
template signals and its templates have no ``get_flashed_messages()``, which
otherwise shows only as Jinja2's "undefined" error.

Starlette's ``TemplateResponse`` is wrapped when asignals' middleware is first
made, not when asignals is imported (Starlette's templating loads Jinja2). The
wrapper warns once per process, on the ``asignals`` logger, for a render in a
request that asignals serves, once per templates object (a library's
templates, mounted in the app, do not use up the warning about the app's
own); asignals' own ``Jinja2Templates`` overrides the method, so its renders
never reach the wrapper.
"""

from __future__ import annotations

import functools
import logging
import threading
import weakref
from typing import Any

from ._context import current_request_context

logger = logging.getLogger("asignals")

_lock = threading.Lock()
_wrapped = False
# The templates objects warned about: each is warned about once.
_warned: weakref.WeakSet[object] = weakref.WeakSet()


def watch_templates() -> None:
    """Wrap Starlette's ``Jinja2Templates.TemplateResponse`` so that it warns
    in a request that asignals serves; once, later calls do nothing."""
    global _wrapped
    if _wrapped:
        return
    import starlette.templating

    from .templating import Jinja2Templates

    with _lock:
        if _wrapped:
            return
        starlettes = starlette.templating.Jinja2Templates
        original = starlettes.TemplateResponse

        @functools.wraps(original)
        def TemplateResponse(
            self: starlette.templating.Jinja2Templates, *args: Any, **kwargs: Any
        ) -> starlette.templating._TemplateResponse:
            if (
                not isinstance(self, Jinja2Templates)
                and _key(self) not in _warned
                and current_request_context() is not None
            ):
                _warn(_key(self), type(self), args[1] if len(args) > 1 else kwargs.get("name"))
            return original(self, *args, **kwargs)

        starlettes.TemplateResponse = TemplateResponse  # type: ignore[method-assign]
        _wrapped = True


def _key(templates: object) -> object:
    """What the warning is given once for: the templates object, or its
    class if it cannot be hashed."""
    try:
        hash(templates)
    except TypeError:
        return type(templates)
    return templates


def _warn(key: object, templates: type, name: object) -> None:
    with _lock:
        if key in _warned:
            return
        _warned.add(key)
    logger.warning(
        "Template %r is rendered with %s.%s in a request that asignals serves. "
        "Starlette's Jinja2Templates (and FastAPI's, fastapi.templating.Jinja2Templates, "
        "the same class) sends no template signals (before_render_template, "
        "template_rendered), and its templates have no get_flashed_messages(). "
        "Use asignals.templating.Jinja2Templates instead: `from asignals.templating "
        "import Jinja2Templates`, with the same constructor arguments. Said once for "
        "these templates.",
        # An old-style call, TemplateResponse(name, context), would put the
        # context here: name only a name.
        name if isinstance(name, str) else None,
        templates.__module__,
        templates.__qualname__,
    )
