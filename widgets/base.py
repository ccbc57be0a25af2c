"""Shared base for workbench widgets: BokehJS loaded offline, bokeh figures inside ipywidgets, stable reprs.

A widget holds no science: it calls a core function in ``workbench`` and draws the result.
"""
from __future__ import annotations

import asyncio
from typing import Callable

import ipywidgets as W
from bokeh.models import LayoutDOM
from jupyter_bokeh.widgets import BokehModel

_BOKEH_LOADED = False


def load_bokeh(force: bool = False) -> bool:
    """Load BokehJS into the notebook page from the installed package (no CDN), once per kernel.

    Returns True when it emitted the loader. Outside IPython it does nothing (scripts and tests).
    """
    global _BOKEH_LOADED
    if _BOKEH_LOADED and not force:
        return False
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with ipywidgets
        return False
    if get_ipython() is None:
        return False
    from bokeh.io import output_notebook
    from bokeh.resources import INLINE

    output_notebook(INLINE, hide_banner=True)
    _BOKEH_LOADED = True
    return True


class BokehPane(BokehModel):
    """A ``jupyter_bokeh.BokehModel`` that never loses an update made before the browser shows it.

    jupyter_bokeh's view renders from ``render_bundle`` (serialised when the widget is created) and applies
    later document patches only when a view exists; a patch sent before the view renders (say a
    ``source.data`` assignment in the same cell that builds the widget) is silently dropped, leaving an empty
    chart. This pane asks the front-end to report its views (``_view_count``): while it has none, a change
    marks the bundle stale instead of sending a patch, and the bundle is re-serialised when a view appears
    (or when the pane is displayed directly).
    """

    def __init__(self, model: LayoutDOM, **kwargs):
        self._stale = False
        super().__init__(model, _view_count=0, **kwargs)
        self.observe(self._on_views, names="_view_count")

    def _document_patched(self, event) -> None:
        if event.setter is self:
            return
        if self._view_count:
            super()._document_patched(event)
        else:
            self._stale = True

    def refresh(self) -> None:
        """Re-serialise the figure into ``render_bundle`` if it changed while no view was showing it."""
        if self._stale:
            self._stale = False
            self.render_bundle = self._model_to_traits(self._model)

    def _on_views(self, change) -> None:
        if change["new"]:
            self.refresh()

    def _repr_mimebundle_(self, **kwargs):
        self.refresh()
        return super()._repr_mimebundle_(**kwargs)


def bokeh_pane(fig: LayoutDOM) -> BokehPane:
    """Wrap a bokeh figure/layout as an ipywidget; update it later through its ``ColumnDataSource.data``."""
    return BokehPane(fig)


class Debouncer:
    """Call ``fn`` once, ``delay`` seconds after the last :meth:`trigger` (typing in a text box).

    With ``delay == 0`` or no running event loop (plain scripts, tests) the call happens at once.
    """

    def __init__(self, fn: Callable[[], None], delay: float = 0.25):
        self.fn, self.delay = fn, delay
        self._handle = None

    def trigger(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self.delay <= 0:
            self.fn()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None:
            try:  # ipykernel handles comm messages on its main-thread loop, which may not be "running" here
                loop = asyncio.get_event_loop()
            except RuntimeError:
                loop = None
        if loop is None or not loop.is_running():
            self.fn()
            return
        self._handle = loop.call_later(self.delay, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self.fn()

    def flush(self) -> None:
        """Run a pending call now (used by tests and before reading state)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
            self.fn()


class WorkbenchWidget(W.VBox):
    """Base class: a VBox whose text repr is stable (no random model or document ids), so nbval can compare it.

    Subclasses set ``self._summary`` (a short string) and build their children.
    """

    _summary: str = ""

    def __init__(self, **kwargs):
        load_bokeh()
        super().__init__(**kwargs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._summary})"

    def _repr_mimebundle_(self, **kwargs):
        for pane in _panes(self):  # send what changed before the first display with the first view
            pane.refresh()
        return super()._repr_mimebundle_(**kwargs)

    def _repr_keys(self):  # ipywidgets uses this for its default repr; keep it empty and stable
        return iter(())


def _panes(widget):
    """Every :class:`BokehPane` below ``widget`` in the children tree."""
    if isinstance(widget, BokehPane):
        yield widget
    for child in getattr(widget, "children", ()) or ():
        yield from _panes(child)


_NOTICE_COLOURS = {"info": "#555", "warning": "#a66300", "error": "#b00020"}


def notice(text: str = "", kind: str = "info") -> W.HTML:
    """A small HTML line for messages (``kind``: info, warning or error)."""
    w = W.HTML()
    set_notice(w, text, kind)
    return w


def set_notice(w: W.HTML, text: str, kind: str = "info") -> None:
    import html

    w.value = f'<span style="color:{_NOTICE_COLOURS[kind]}">{html.escape(text)}</span>' if text else ""
