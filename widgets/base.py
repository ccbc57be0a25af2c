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


def bokeh_pane(fig: LayoutDOM) -> BokehModel:
    """Wrap a bokeh figure/layout as an ipywidget; update it later through its ``ColumnDataSource.data``."""
    return BokehModel(fig)


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
                from ipykernel.kernelbase import Kernel  # noqa: F401
                loop = asyncio.get_event_loop()
            except Exception:
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

    def _repr_keys(self):  # ipywidgets uses this for its default repr; keep it empty and stable
        return iter(())


def notice(text: str = "", kind: str = "info") -> W.HTML:
    """A small HTML line for messages (``kind``: info, warning or error)."""
    colour = {"info": "#555", "warning": "#a66300", "error": "#b00020"}[kind]
    w = W.HTML()
    set_notice(w, text, kind)
    w._notice_colour = colour
    return w


def set_notice(w: W.HTML, text: str, kind: str = "info") -> None:
    import html

    colour = {"info": "#555", "warning": "#a66300", "error": "#b00020"}[kind]
    w.value = f'<span style="color:{colour}">{html.escape(text)}</span>' if text else ""
