"""The widget base's long actions (WorkbenchWidget.run_in_background / BackgroundTask): progress, Stop through
Cancelled, one run at a time, every error in the notice, and callbacks delivered on the kernel's loop thread."""
import asyncio
import threading

import pytest

pytest.importorskip("ipywidgets")
from widgets.base import BackgroundTask, Cancelled, WorkbenchWidget, notice  # noqa: E402

WAIT = 30.0


class Lab(WorkbenchWidget):
    def __init__(self):
        self.info = notice()
        self.go = self.task_button("run", self.start)
        self.calls, self.progress, self.done = 0, [], []
        self.gate, self.started = threading.Event(), threading.Event()
        super().__init__(children=[self.go, self.info])
        self.background = True

    def work(self, tick):
        self.calls += 1
        tick(1, 3)
        self.started.set()
        assert self.gate.wait(WAIT)
        tick(2, 3)
        tick(3, 3)
        return "result"

    def start(self, **kw):
        kw.setdefault("on_done", self.done.append)
        return self.run_in_background(self.work, on_progress=lambda d, t: self.progress.append(d), **kw)


def test_button_toggles_to_stop_and_stop_ends_with_a_notice():
    w = Lab()
    w.go.click()
    assert w.started.wait(WAIT) and w.busy and w.go.description == "Stop" and w.go.icon == "stop"
    assert w.start() is None and w.calls == 1           # a second start while running starts nothing
    w.go.click()                                        # Stop
    assert w.go.description == "stopping ..." and w.go.disabled
    w.go.click()
    w.gate.set()
    assert w.wait_task(WAIT)
    assert w.task.outcome == "stopped" and "stopped" in w.info.value and w.done == [] and w.calls == 1
    assert w.go.description == "run" and w.go.icon == "play" and not w.go.disabled and not w.busy


def test_finished_run_delivers_progress_and_result():
    w = Lab()
    w.gate.set()
    w.go.click()
    assert w.wait_task(WAIT) and w.task.outcome == "done" and w.done == ["result"]
    assert w.progress == [1, 2, 3] and w.go.description == "run"


@pytest.mark.parametrize("where", ["worker", "on_done"])
def test_every_error_reaches_the_notice(where):
    w = Lab()
    w.gate.set()

    def boom(*_):
        raise RuntimeError("no such thing")

    if where == "worker":
        w.work = boom
    w.start(**({"on_done": boom} if where == "on_done" else {}))
    assert w.wait_task(WAIT) and w.task.outcome == "error"
    assert "failed: RuntimeError: no such thing" in w.info.value and "#b00020" in w.info.value
    assert not w.busy and w.go.description == "run"


def test_synchronous_mode_runs_at_once():
    w = Lab()
    w.gate.set()
    t = w.start(background=False)
    assert t.outcome == "done" and w.done == ["result"] and w.go.description == "run"


def test_callbacks_run_on_the_kernel_loop_thread_and_wait_delivers_when_it_is_blocked():
    loop = asyncio.new_event_loop()
    loop_thread = threading.Thread(target=loop.run_forever, daemon=True)
    loop_thread.start()
    try:
        seen, made = [], threading.Event()
        holder = {}

        def make():   # started from the loop's thread, as an observer runs in the kernel
            holder["t"] = BackgroundTask(lambda tick: (tick(1, 1), "ok")[1],
                                         on_progress=lambda d, t: seen.append(("progress", threading.current_thread())),
                                         on_done=lambda r: seen.append((r, threading.current_thread())),
                                         on_end=made.set).start()

        loop.call_soon_threadsafe(make)
        assert made.wait(WAIT)
        assert [s for s, _ in seen] == ["progress", "ok"] and all(th is loop_thread for _, th in seen)
        # a blocked loop (a cell waiting on the task): wait() delivers the end on the calling thread, once
        block = threading.Event()
        loop.call_soon_threadsafe(block.wait, WAIT)
        got = []
        t = BackgroundTask(lambda tick: 5, on_done=got.append)
        t._loop = loop
        t.start()
        assert t.wait(WAIT) and got == [5] and t.outcome == "done"
        block.set()
        ran = threading.Event()
        loop.call_soon_threadsafe(ran.set)
        assert ran.wait(WAIT) and got == [5]          # the loop's own delivery later is a no-op
    finally:
        loop.call_soon_threadsafe(loop.stop)
        loop_thread.join(WAIT)


def test_cancelled_is_raised_by_progress_after_stop():
    t = BackgroundTask(lambda tick: None)
    t.stop()
    with pytest.raises(Cancelled):
        t.progress(1, 2)


def test_browser_changes_arriving_on_another_thread_are_applied_on_the_kernel_loop(monkeypatch):
    """JupyterLab may deliver a chart's browser-side changes on a subshell thread while the labs edit the same
    bokeh models on the main thread: BokehPane hands such a message to the main thread's loop (where it really
    changes the figure), and applies one from its own thread at once."""
    from bokeh.plotting import figure
    from jupyter_bokeh.widgets import BokehModel

    from widgets.base import BokehPane

    seen = []
    monkeypatch.setattr(BokehModel, "_sync_model",
                        lambda self, model, content, buffers: seen.append((threading.current_thread(), content)))

    async def scenario():
        pane = BokehPane(figure(width=200, height=100))
        pane._sync_model(pane, {"n": 0}, [])  # from its own thread: applied at once
        assert seen == [(threading.current_thread(), {"n": 0})]
        other = threading.Thread(target=pane._sync_model, args=(pane, {"n": 1}, []))
        other.start()
        other.join()
        assert len(seen) == 1  # not applied on the subshell-like thread
        for _ in range(100):
            await asyncio.sleep(0.01)
            if len(seen) == 2:
                break
        return threading.current_thread()

    home = asyncio.run(scenario())
    assert seen[1] == (home, {"n": 1})


def test_a_pane_made_outside_a_running_loop_applies_browser_changes_where_they_arrive(monkeypatch):
    from bokeh.plotting import figure
    from jupyter_bokeh.widgets import BokehModel

    from widgets.base import BokehPane

    seen = []
    monkeypatch.setattr(BokehModel, "_sync_model",
                        lambda self, model, content, buffers: seen.append(threading.current_thread()))
    pane = BokehPane(figure(width=200, height=100))
    other = threading.Thread(target=pane._sync_model, args=(pane, {}, []))
    other.start()
    other.join()
    assert seen == [other]
