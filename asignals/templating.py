"""Jinja2 templates that send Flask's template signals: a drop-in for
Starlette's ``Jinja2Templates``.

>>> from asignals.templating import Jinja2Templates
>>> templates = Jinja2Templates(directory="templates")

In a sync endpoint, or an async one whose ``before_render_template``
receivers are all sync, ``templates.TemplateResponse(request, name, context)``
as with Starlette. In an async endpoint where an async receiver changes the
context, or with an async Jinja2 environment, ``await
templates.render_response(request, name, context)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from os import PathLike
from typing import Any, overload

import anyio.from_thread
import jinja2
import starlette.templating
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import HTMLResponse

from ._context import RequestContext, _app_ctx, current_request_context
from ._deferred import send_from_async, send_from_sync
from ._exceptions import ArgumentError, NeedsAwaitError
from ._flash import get_flashed_messages
from ._lifecycle import before_render_template, template_rendered
from ._signal import Signal
from ._utilities import in_anyio_worker_thread, on_event_loop

__all__ = ["Jinja2Templates"]

ContextProcessor = Callable[[Request], dict[str, Any]]


class Jinja2Templates(starlette.templating.Jinja2Templates):
    """Starlette's ``Jinja2Templates``, with the same constructor and
    ``TemplateResponse``, that sends ``before_render_template`` and then
    ``template_rendered`` around each render, with the app as sender and
    ``template`` (the ``jinja2.Template``) and ``context`` (the dict it
    renders with) as arguments. Changes a ``before_render_template`` receiver
    makes to ``context`` show in the output. Its templates can call
    ``get_flashed_messages()``.

    Which way to render:

    - ``TemplateResponse(...)``, sync, as in Starlette. In a sync endpoint (a
      worker thread), every receiver runs before the render, async ones on
      the event loop. In an async endpoint, sync receivers run before the
      render, but async ones cannot be awaited there: they run after it,
      before ``request_finished``, and changes they make to the context do
      not show.
    - ``await render_response(...)``, in async code: every receiver runs in
      its turn, async ones awaited, before the render. Use it when an async
      ``before_render_template`` receiver changes the context, and with an
      async Jinja2 environment (``enable_async=True``), whose templates
      ``TemplateResponse`` can only render in a sync endpoint.

    :param directory: Where the templates are, as for Starlette (then
        autoescaping is on for ``.html``, ``.htm``, ``.xml`` files).
    :param env: A ``jinja2.Environment`` to use instead of ``directory``.
    :param context_processors: Callables that take the request and return a
        dict to add to every template's context.
    """

    @overload
    def __init__(
        self,
        directory: str | PathLike[str] | Sequence[str | PathLike[str]],
        *,
        context_processors: list[ContextProcessor] | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self,
        *,
        env: jinja2.Environment,
        context_processors: list[ContextProcessor] | None = None,
    ) -> None: ...

    def __init__(
        self,
        directory: str | PathLike[str] | Sequence[str | PathLike[str]] | None = None,
        *,
        context_processors: list[ContextProcessor] | None = None,
        env: jinja2.Environment | None = None,
    ) -> None:
        if env is not None and directory is None:
            super().__init__(env=env, context_processors=context_processors)
        elif directory is not None and env is None:
            super().__init__(directory, context_processors=context_processors)
        else:
            raise ArgumentError(
                "Jinja2Templates takes either a directory or env=, not both or neither"
            )
        self.env.globals.setdefault("get_flashed_messages", get_flashed_messages)

    def TemplateResponse(
        self,
        request: Request,
        name: str,
        context: dict[str, Any] | None = None,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        media_type: str | None = None,
        background: BackgroundTask | None = None,
    ) -> _TemplateResponse:
        """Render template ``name`` with ``context`` (to which ``request`` and
        what the context processors return are added) and return an HTML
        response, sending ``before_render_template`` before the render and
        ``template_rendered`` after it. For sync code, and async code whose
        receivers of ``before_render_template`` are all sync: see the class
        documentation."""
        if self.env.is_async and on_event_loop():
            raise NeedsAwaitError(
                "This Jinja2 environment is async (enable_async=True): its templates "
                "cannot render in sync code on the event loop. Use `await "
                "templates.render_response(...)` in an async endpoint."
            )
        template, context = self._prepare(request, name, context)
        kwargs = {"template": template, "context": context}
        ctx = current_request_context()
        _send_from_sync(ctx, request, before_render_template, kwargs)
        if not self.env.is_async:
            content = template.render(context)
        elif in_anyio_worker_thread():
            content = anyio.from_thread.run(template.render_async, context)
        else:
            content = template.render(context)  # no event loop: Jinja2 runs one
        _send_from_sync(ctx, request, template_rendered, kwargs)
        return _TemplateResponse(
            template, context, content, status_code, headers, media_type, background
        )

    async def render_response(
        self,
        request: Request,
        name: str,
        context: dict[str, Any] | None = None,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        media_type: str | None = None,
        background: BackgroundTask | None = None,
    ) -> _TemplateResponse:
        """:meth:`TemplateResponse` for async code: async receivers of
        ``before_render_template`` are awaited before the render, so the
        changes they make to ``context`` show, and an async Jinja2
        environment renders with ``render_async``::

            async def page(request):
                return await templates.render_response(request, "page.html", {"n": 1})
        """
        template, context = self._prepare(request, name, context)
        kwargs = {"template": template, "context": context}
        ctx = current_request_context()
        await _send_from_async(ctx, request, before_render_template, kwargs)
        if self.env.is_async:
            content = await template.render_async(context)
        else:
            content = template.render(context)
        await _send_from_async(ctx, request, template_rendered, kwargs)
        return _TemplateResponse(
            template, context, content, status_code, headers, media_type, background
        )

    def _prepare(
        self, request: Request, name: str, context: dict[str, Any] | None
    ) -> tuple[jinja2.Template, dict[str, Any]]:
        """The template and the context it renders with, as Starlette makes
        them: the caller's dict, with ``request`` and the context processors'
        values added."""
        context = context or {}
        context.setdefault("request", request)
        for processor in self.context_processors:
            context.update(processor(request))
        return self.get_template(name), context


class _TemplateResponse(starlette.templating._TemplateResponse):
    """Starlette's response for a rendered template, made from the rendered
    content (Starlette's renders in its constructor). It keeps ``template``
    and ``context``, which Starlette's TestClient shows as
    ``response.template`` and ``response.context``."""

    def __init__(
        self,
        template: jinja2.Template,
        context: dict[str, Any],
        content: str,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        media_type: str | None = None,
        background: BackgroundTask | None = None,
    ) -> None:
        self.template = template
        self.context = context
        HTMLResponse.__init__(self, content, status_code, headers, media_type, background)


def _sender(request: Request) -> Any:
    """The app, outside a request that asignals handles: the current app
    context's, else the one Starlette puts in the scope."""
    ctx = _app_ctx.get(None)
    return ctx.app if ctx is not None else request.scope.get("app")


def _send_from_sync(
    ctx: RequestContext | None, request: Request, signal: Signal, kwargs: dict[str, Any]
) -> None:
    if ctx is not None:
        send_from_sync(ctx, signal, kwargs)
    elif signal._observed:
        signal.send(_sender(request), **kwargs)


async def _send_from_async(
    ctx: RequestContext | None, request: Request, signal: Signal, kwargs: dict[str, Any]
) -> None:
    if ctx is not None:
        await send_from_async(ctx, signal, kwargs)
    elif signal._observed:
        await signal.send_async(_sender(request), **kwargs)
