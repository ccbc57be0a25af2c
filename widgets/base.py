"""Shared base for workbench widgets: BokehJS loaded offline, bokeh figures inside ipywidgets, stable reprs.

A widget holds no science: it calls a core function in ``workbench`` and draws the result.

Lesson: ``notebooks/00_tour.ipynb``.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import html as _html
import re
import threading
import time
from pathlib import Path
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

    The browser's own changes to the figure (a range it panned, a selection) come back as messages that JupyterLab
    may hand to a kernel *subshell* thread, while the labs change the same bokeh models on the kernel's main
    thread (their callbacks run there): two threads editing one list of renderers gave "Set changed size during
    iteration". So a message arriving on another thread is applied on the main thread's event loop instead.
    """

    def __init__(self, model: LayoutDOM, **kwargs):
        self._stale = False
        self._home = threading.current_thread()
        self._home_loop = _kernel_loop()
        super().__init__(model, _view_count=0, **kwargs)
        self.observe(self._on_views, names="_view_count")

    def _sync_model(self, model, content, buffers) -> None:
        loop = self._home_loop
        if threading.current_thread() is not self._home and loop is not None and loop.is_running():
            loop.call_soon_threadsafe(super()._sync_model, model, content, buffers)
        else:
            super()._sync_model(model, content, buffers)

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

    # --- re-entrancy: one mechanism for "don't react to my own trait updates" ---------------------------
    @contextlib.contextmanager
    def quietly(self):
        """Set controls without reacting to them: inside ``with self.quietly():`` :attr:`is_quiet` is True,
        and observers registered through :meth:`reacting` skip their call. Nests; always restored."""
        self._quiet_depth = getattr(self, "_quiet_depth", 0) + 1
        try:
            yield self
        finally:
            self._quiet_depth -= 1

    @property
    def is_quiet(self) -> bool:
        """True inside :meth:`quietly` (the widget is updating its own controls)."""
        return getattr(self, "_quiet_depth", 0) > 0

    def reacting(self, fn: Callable) -> Callable:
        """``fn`` wrapped for ``observe``/``on_click``: it is skipped while the widget is :meth:`quietly`
        updating itself. Use ``control.observe(self.reacting(handler), names="value")``."""
        def handler(*args, **kwargs):
            if not self.is_quiet:
                return fn(*args, **kwargs)
            return None

        return handler

    # --- long actions: progress, Stop, never a second run (see BackgroundTask) ---------------------------
    #: where long actions run: None (default) in a worker thread when the kernel's event loop is running (a
    #: notebook: the kernel stays responsive), at once otherwise (scripts, tests); True/False force either
    background: bool | None = None
    _task: "BackgroundTask | None" = None
    _task_button: W.Button | None = None

    @property
    def busy(self) -> bool:
        """True while a long action started by :meth:`run_in_background` runs."""
        return self._task is not None and self._task.running

    @property
    def task(self) -> "BackgroundTask | None":
        """The running (or last) long action."""
        return self._task

    def task_button(self, description: str, start: Callable[[], None], *, icon: str = "play",
                    tooltip: str = "") -> W.Button:
        """A button that calls ``start()`` when idle and stops the running action when busy: it reads "Stop"
        while an action runs, so a second click stops instead of starting a second run."""
        b = W.Button(description=description, icon=icon, tooltip=tooltip,
                     layout=W.Layout(width="auto", min_width="96px", flex="0 0 auto"))
        b._workbench_idle = dict(description=description, icon=icon, tooltip=tooltip, button_style="")

        def click(_):
            if self.busy:
                self.stop_task()
            elif not b.disabled:
                start()

        b.on_click(click)
        self._task_button = b
        return b

    def _task_notice(self) -> W.HTML | None:
        info = getattr(self, "info", None)
        return info if isinstance(info, W.HTML) else None

    def stop_task(self) -> None:
        """Ask the running action to stop (it ends at its next progress step, with a "stopped" notice)."""
        t = self._task
        if t is None or not t.running or t.stop_requested:
            return
        t.stop()
        b = self._task_button
        if b is not None:
            b.description, b.disabled = "stopping ...", True
        if (w := self._task_notice()) is not None:
            set_notice(w, "stopping after the current step ...", "warning")

    def wait_task(self, timeout: float | None = None) -> bool:
        """Block until the running action ended and the widget shows its result (scripts, tests)."""
        return True if self._task is None else self._task.wait(timeout)

    def run_in_background(self, fn: Callable, *, on_progress: Callable | None = None,
                          on_done: Callable | None = None, on_error: Callable | None = None,
                          on_stopped: Callable | None = None, on_end: Callable | None = None,
                          background: bool | None = None) -> "BackgroundTask | None":
        """Run ``fn(progress)`` as the widget's one long action (see :class:`BackgroundTask`); returns None and
        starts nothing while another runs. The :meth:`task_button` reads "Stop" meanwhile. Defaults: an error
        and a stop end in the widget's notice (``self.info``)."""
        if self.busy:
            return None

        def error(e):
            if on_error is not None:
                on_error(e)
            elif (w := self._task_notice()) is not None:
                set_notice(w, f"failed: {type(e).__name__}: {e}", "error")

        def stopped():
            if on_stopped is not None:
                on_stopped()
            elif (w := self._task_notice()) is not None:
                set_notice(w, "stopped", "warning")

        def end():
            b = self._task_button
            if b is not None:
                for k, v in b._workbench_idle.items():
                    setattr(b, k, v)
                b.disabled = False
            if on_end is not None:
                on_end()

        bg = self.background if background is None else background
        if bg is None:
            bg = _kernel_loop() is not None
        self._task = BackgroundTask(fn, on_progress=on_progress, on_done=on_done, on_error=error,
                                    on_stopped=stopped, on_end=end)
        b = self._task_button
        if b is not None and bg:
            b.description, b.icon, b.button_style, b.disabled = "Stop", "stop", "warning", False
            b.tooltip = "stop this run (the previous results stay)"
        self._task.start(background=bg)
        return self._task

    # --- export (see widgets/export.py) -------------------------------------------------------------------
    #: where the export buttons (and calls without a path) write; relative to the notebook's folder
    export_dir: Path | str = Path("exports")
    #: files under this size also get a download link (a data: URL) in the notice
    export_link_limit: int = 8 * 2**20

    def export_tables(self) -> dict[str, dict[str, list]]:
        """The data behind the figures: every ``ColumnDataSource`` the widget holds as an attribute (or in a dict
        attribute, as ``name.key``), by attribute name, each as ``{column: values}``."""
        from bokeh.models import ColumnDataSource

        out, seen = {}, set()
        for name, v in vars(self).items():
            items = [(name, v)] if isinstance(v, ColumnDataSource) else (
                [(f"{name}.{k}", s) for k, s in v.items() if isinstance(s, ColumnDataSource)] if isinstance(v, dict)
                else [])
            for n, src in items:
                if id(src) not in seen and not n.startswith("_"):
                    seen.add(id(src))
                    out[n] = {c: list(vals) if not hasattr(vals, "dtype") else vals for c, vals in src.data.items()}
        return out

    def export_state(self) -> dict:
        """What the view shows besides its tables (the core result, the settings); labs add theirs."""
        return {}

    def _export_meta(self) -> dict:
        return {"widget": type(self).__name__, "summary": self._summary,
                "exported": time.strftime("%Y-%m-%dT%H:%M:%S"), "state": self.export_state()}

    def _export_path(self, path, suffix: str) -> Path:
        if path:
            return Path(path)
        stem = f"{re.sub(r'(?<!^)(?=[A-Z])', '-', type(self).__name__).lower()}-{time.strftime('%Y%m%d-%H%M%S')}"
        base, k = Path(self.export_dir), 2
        out = base / f"{stem}{suffix}"
        while out.exists():
            out, k = base / f"{stem}-{k}{suffix}", k + 1
        return out

    def _export_notice_widget(self) -> W.HTML:
        info = getattr(self, "info", None)
        if isinstance(info, W.HTML):
            return info
        if not hasattr(self, "_export_info"):
            self._export_info = notice()
        return self._export_info

    def _export_remember(self) -> W.HTML:
        w = self._export_notice_widget()
        if w.value != getattr(self, "_export_notice_value", None):
            self._export_prev_notice = w.value
        return w

    def _export_done(self, path: Path, what: str) -> None:
        link = ""
        try:
            size = path.stat().st_size
            if size <= self.export_link_limit:
                mime = {".png": "image/png", ".json": "application/json", ".csv": "text/csv"}.get(
                    path.suffix.lower(), "application/octet-stream")
                url = f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"
                link = (f' <a download="{_html.escape(path.name)}" href="{url}" '
                        f'style="text-decoration:underline">download</a>')
        except OSError:
            pass
        w = self._export_remember()
        set_notice(w, f"saved {what} to {path}", "info", html_suffix=link)
        self._export_notice_value = w.value

    def _export_write(self, path: Path, write: Callable[[Path], None]) -> None:
        from .export import ExportError

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write(path)
        except OSError as e:
            raise ExportError(f"cannot write {path}: {e.strerror or e}") from e

    def _export_failed(self, e: Exception) -> None:
        w = self._export_remember()
        set_notice(w, f"export failed: {e}", "error")
        self._export_notice_value = w.value

    def export_view_png(self, path: str | Path | None = None, scale: float = 1.5) -> Path:
        """Draw the figures the widget shows now (only the selected tab, nothing hidden) into one PNG, without a
        browser (matplotlib redraws the bokeh figures). ``path``: default ``export_dir/<widget>-<time>.png``."""
        from .export import ExportError, render_png, shown_layout

        path = self._export_path(path, ".png")
        try:
            if path.suffix.lower() != ".png":
                raise ExportError(f"a PNG export needs a .png path, got {path.name!r}")
            layout = shown_layout(self)
            if layout is None:
                raise ExportError("nothing to export: the widget shows no figure")
            figs = [f for f, *_ in layout.place(0, 0)]
            if not any(len(next(iter(r.data_source.data.values()), ()))
                       for f in figs for r in f.renderers if hasattr(r, "data_source") and r.data_source.data):
                raise ExportError("nothing to export yet: the figures shown have no data")
            shown = self._export_notice_widget().value  # the lab's own message, not a previous export's
            if shown == getattr(self, "_export_notice_value", None):
                shown = getattr(self, "_export_prev_notice", "")
            text = re.sub(r"<[^>]+>", "", shown)
            header = f"{type(self).__name__}({self._summary})" + (f"  |  {_html.unescape(text)}" if text else "")
            self._export_write(path, lambda p: render_png(layout, p, header=header, scale=scale))
        except ExportError as e:
            self._export_failed(e)
            raise
        self._export_done(path, "PNG")
        return path

    export_png = export_view_png

    def export_data(self, path: str | Path | None = None, table: str | None = None) -> Path:
        """Write the data the widget shows: ``.json`` (every table and the state), ``.npz`` (the same as arrays,
        ``<table>.<column>``, plus ``meta.json``) or ``.csv`` (one table: ``table`` or the first non-empty one).
        ``path``: default ``export_dir/<widget>-<time>.json``."""
        from .export import ExportError, write_data

        path = self._export_path(path, ".json")
        try:
            tables = self.export_tables()
            if not any(len(v) for cols in tables.values() for v in cols.values()):
                raise ExportError("nothing to export yet: the view has no data")
            self._export_write(path, lambda p: write_data(p, tables, self._export_meta(), table))
        except ExportError as e:
            self._export_failed(e)
            raise
        self._export_done(path, "data")
        return path

    def export_controls(self, formats=(".json", ".csv", ".npz"), default: str = ".json") -> W.HBox:
        """"Export PNG" and "Export data" buttons (with the data format) for the widget's controls row; they write
        into ``export_dir`` and say where in the notice, with a download link. Built once per widget."""
        if getattr(self, "_export_box", None) is None:
            fit = dict(width="auto", min_width="112px", flex="0 0 auto")  # never "Export d...": as wide as the label
            self.export_png_button = W.Button(description="Export PNG", icon="image", layout=W.Layout(**fit),
                                              tooltip="draw what the widget shows into a PNG in export_dir")
            self.export_data_button = W.Button(description="Export data", icon="download",
                                               layout=W.Layout(**fit),
                                               tooltip="write the data behind the figures in the chosen format")
            self.export_format = W.Dropdown(options=list(formats), value=default, layout=W.Layout(width="72px"))
            self.export_png_button.on_click(lambda _: self._click_export("png"))
            self.export_data_button.on_click(lambda _: self._click_export("data"))
            self._export_box = W.HBox([self.export_png_button, self.export_data_button, self.export_format],
                                      layout=W.Layout(flex="0 0 auto"))
        return self._export_box

    def _click_export(self, kind: str) -> Path | None:
        """What a button does: the export, and every error as a visible notice (never a traceback)."""
        try:
            if kind == "png":
                return self.export_view_png()
            return self.export_data(self._export_path(None, self.export_format.value))
        except Exception as e:  # noqa: BLE001 - a student sees the message, not a traceback in the log
            from .export import ExportError

            if not isinstance(e, ExportError):
                self._export_failed(Exception(f"{type(e).__name__}: {e}"))
            return None


class Cancelled(Exception):
    """Raised from a progress callback to stop a core loop cleanly (the user clicked Stop)."""


def _kernel_loop():
    """The running event loop of the kernel's main thread (ipykernel handles widget messages on it), or None in
    scripts and tests."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        pass
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            loop = asyncio.get_event_loop()
    except RuntimeError:
        return None
    return loop if loop.is_running() else None


class BackgroundTask:
    """One long action run in a worker thread that posts progress, can be stopped, and ends in exactly one of
    ``on_done(result)``, ``on_stopped()`` or ``on_error(exc)``, then ``on_end()``.

    ``fn(progress)`` does the work and calls ``progress(done, total)`` as it goes (pass it to a core function's
    ``progress=``): that forwards to ``on_progress(done, total)`` and raises :class:`Cancelled` once :meth:`stop`
    was called, which ends the core loop cleanly. Callbacks run on the kernel's main thread when a running event
    loop was found at :meth:`start` (widget updates from the kernel's own thread), otherwise in the worker thread;
    :meth:`wait` joins the worker and delivers the end at once on the calling thread. ``background=False`` runs
    ``fn`` at once in the calling thread (same callbacks).
    """

    def __init__(self, fn: Callable, *, on_progress: Callable | None = None, on_done: Callable | None = None,
                 on_error: Callable | None = None, on_stopped: Callable | None = None,
                 on_end: Callable | None = None):
        import threading

        self.fn = fn
        self.on_progress, self.on_done, self.on_error = on_progress, on_done, on_error
        self.on_stopped, self.on_end = on_stopped, on_end
        self._stop = threading.Event()
        self._finished = threading.Event()   # the end was delivered
        self._lock = threading.Lock()
        self._outcome = None                  # ("done", result) | ("stopped", None) | ("error", exc)
        self._thread = None
        self._loop = None

    # --- state --------------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """True from :meth:`start` until the end was delivered."""
        return self._thread is not None and not self._finished.is_set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    @property
    def outcome(self) -> str | None:
        """"done", "stopped", "error", or None while running."""
        return self._outcome[0] if self._finished.is_set() and self._outcome else None

    # --- control ------------------------------------------------------------------------------------------
    def start(self, background: bool = True) -> "BackgroundTask":
        import threading

        if self._thread is not None:
            return self  # one run per task: a second start never starts a second run
        if not background:
            self._thread = threading.current_thread()
            self._work()
            self._finish()
            return self
        self._loop = _kernel_loop()
        self._thread = threading.Thread(target=self._run, name="workbench-task", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ask the work to stop: the next ``progress`` call raises :class:`Cancelled`."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the work ended and its end was delivered (on this thread if not yet). True if it ended."""
        import threading

        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout)
            if t.is_alive():
                return False
        if self._outcome is not None:
            self._finish()
        return self._finished.is_set()

    # --- internals ----------------------------------------------------------------------------------------
    def progress(self, done, total) -> None:
        if self._stop.is_set():
            raise Cancelled("stopped")
        if self.on_progress is not None:
            self._post(self._progress, done, total)

    def _progress(self, done, total) -> None:
        if not self._finished.is_set():
            self.on_progress(done, total)

    def _work(self) -> None:
        try:
            result = self.fn(self.progress)
            self._outcome = ("stopped", None) if self._stop.is_set() and result is None else ("done", result)
        except Cancelled:
            self._outcome = ("stopped", None)
        except BaseException as e:  # noqa: BLE001 - every error ends in on_error (a visible notice)
            self._outcome = ("error", e)

    def _run(self) -> None:
        self._work()
        self._post(self._finish)

    def _post(self, cb: Callable, *args) -> None:
        import threading

        loop = self._loop
        if loop is not None and threading.current_thread() is not threading.main_thread():
            try:
                loop.call_soon_threadsafe(cb, *args)
                return
            except RuntimeError:  # the loop closed: deliver here
                pass
        cb(*args)

    def _finish(self) -> None:
        with self._lock:
            if self._finished.is_set() or self._outcome is None:
                return
            kind, value = self._outcome
            try:
                cb = {"done": self.on_done, "stopped": self.on_stopped, "error": self.on_error}[kind]
                if cb is not None:
                    cb(value) if kind != "stopped" else cb()
                elif kind == "error":
                    raise value
            except Exception as e:  # noqa: BLE001 - an error in the handler itself still reaches on_error
                self._outcome = ("error", e)
                if self.on_error is not None and cb is not self.on_error:
                    try:
                        self.on_error(e)
                    except Exception:  # noqa: BLE001
                        pass
            finally:
                self._finished.set()
                if self.on_end is not None:
                    self.on_end()


def side_by_side(*widgets: W.Widget, gap: str = "16px") -> W.HBox:
    """Put widgets side by side in a row that wraps: each keeps its own width (never squeezed below its content) and
    moves to the next line when the row is full, e.g. two ``Playground(..., compact=True)`` (420 px each) share a
    900 px notebook column, and two full-width ones stack. ``gap``: the space between them (and between lines)."""
    for w in widgets:
        w.layout.flex = "0 0 auto"
        w.layout.margin = f"0 {gap} {gap} 0"
    return W.HBox(list(widgets), layout=W.Layout(flex_flow="row wrap", align_items="flex-start", width="100%"))


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


def set_notice(w: W.HTML, text: str, kind: str = "info", html_suffix: str = "") -> None:
    """Show ``text`` (escaped) in ``w``; ``html_suffix``: trusted HTML after it (a download link)."""
    import html

    w.value = (f'<span style="color:{_NOTICE_COLOURS[kind]}">{html.escape(text)}{html_suffix}</span>'
               if text else "")
