"""ScalingLab's slow fit (scipy defaults: one full multistart per bootstrap refit) as a long action: it runs in a
worker thread, counts refits in the notice, can be stopped (the previous fit stays), never starts twice, and an
error in the worker reaches the notice. A stand-in for ``fit_source`` makes the "refits" advance only when the test
releases them, so nothing depends on timing."""
import threading

import pytest

pytest.importorskip("ipywidgets")
import widgets.scaling_lab as mod  # noqa: E402
from widgets import ScalingLab  # noqa: E402

WAIT = 30.0  # generous: only ever reached when something is broken


class GatedFit:
    """``fit_source`` whose bootstrap refits wait for ``gate``: refit 1 is reported, then ``started`` is set and
    the worker waits; after the gate it reports the rest (``progress`` raises Cancelled once Stop was clicked),
    then fails with ``error`` or returns a real (strict, fast) fit of the same data."""

    def __init__(self, real, error=None):
        self.real, self.error = real, error
        self.calls = 0
        self.started, self.gate = threading.Event(), threading.Event()
        self.result = None

    def __call__(self, data, **kw):
        progress = kw.get("progress")
        if progress is None:             # the fast (strict) path stays synchronous
            return self.real(data, **kw)
        self.calls += 1
        n = kw["bootstrap"]
        progress(1, n)
        self.started.set()
        assert self.gate.wait(WAIT)
        for i in range(2, n + 1):
            progress(i, n)
        if self.error is not None:
            raise self.error
        self.result = self.real(data, reduce=kw["reduce"], grid="coarse", stopping="strict", bootstrap=0)
        return self.result


@pytest.fixture()
def lab(monkeypatch):
    w = ScalingLab(bootstrap=10)
    w.background = True          # as in a notebook (no kernel event loop in tests)
    fake = GatedFit(mod.fit_source)
    monkeypatch.setattr(mod, "fit_source", fake)
    return w, fake


def test_slow_fit_runs_in_the_background_and_stop_keeps_the_previous_fit(lab):
    w, fake = lab
    prev_fit, prev_points, prev_params = w.fit, dict(w.points_source.data), w.params_view.value
    prev_frontier = dict(w.frontier_source.data)
    w.stopping.value = "scipy defaults"             # returns at once: the fit runs in a worker thread
    assert fake.started.wait(WAIT)
    assert w.busy and w.fit_button.description == "Stop" and not w.fit_button.disabled
    assert "refit 1 of 10" in w.info.value and "Stop keeps the fit on display" in w.info.value
    assert all(getattr(w, k).disabled for k in ("source", "drop_highest", "reduce", "delta", "grid", "stopping",
                                                "bootstrap"))
    # the widget stays responsive: another control's observer runs and reads the fit on display
    w.budget.value = 24.0
    assert w.readout["C"] == pytest.approx(1e24) and "1e+24" in w.budget_view.value
    # a second run never starts: not from a changed choice (put back), not from refit()
    w.reduce.value = "mean"
    assert w.reduce.value == "sum"
    w.refit()
    w.reload()
    assert fake.calls == 1
    w.fit_button.click()                            # Stop
    assert w.fit_button.description == "stopping ..." and w.fit_button.disabled
    assert "stopping" in w.info.value
    w.fit_button.click()                            # a second click while stopping does nothing
    fake.gate.set()
    assert w.wait_task(WAIT)
    assert fake.calls == 1 and w.task.outcome == "stopped"
    assert "fit stopped after 1 of 10 bootstrap refits" in w.info.value and "previous fit stays" in w.info.value
    assert w.fit is prev_fit and w.points_source.data == prev_points and w.params_view.value == prev_params
    assert w.frontier_source.data == prev_frontier
    assert w.stopping.value == "strict"             # the controls show the choices of the fit on display
    assert not w.busy and w.fit_button.description == "refit" and not w.fit_button.disabled
    assert not w.stopping.disabled and not w.reduce.disabled


def test_slow_fit_that_finishes_is_shown(lab):
    w, fake = lab
    fake.gate.set()
    w.stopping.value = "scipy defaults"
    assert w.wait_task(WAIT) and w.task.outcome == "done"
    assert w.fit is fake.result and "fitted 240 runs" in w.info.value
    assert w.stopping.value == "scipy defaults" and w.fit_button.description == "refit"
    assert not w.stopping.disabled and fake.calls == 1


def test_error_in_the_worker_reaches_the_notice_and_the_next_fit_recovers(lab, monkeypatch):
    w, fake = lab
    fake.error = ValueError("boom in refit 7")
    fake.gate.set()
    w.stopping.value = "scipy defaults"
    assert w.wait_task(WAIT) and w.task.outcome == "error"
    assert "fit failed: unexpected ValueError: boom in refit 7" in w.info.value and "#b00020" in w.info.value
    assert w.fit is None and w.points_source.data["C"] == []          # nothing stale stays on the charts
    assert w.data is not None and not w.busy and w.fit_button.description == "refit"
    assert not w.fit_button.disabled and not w.stopping.disabled
    monkeypatch.setattr(mod, "fit_source", fake.real)
    w.stopping.value = "strict"                                       # recovery on the next good fit
    assert w.fit is not None and "fitted 240 runs" in w.info.value


def test_refit_button_when_idle_fits_again_with_the_current_choices(lab):
    w, fake = lab
    before = w.fit
    w.fit_button.click()                            # strict: a fast synchronous refit
    assert w.fit is not before and w.fit.n_starts == before.n_starts and fake.calls == 0
    assert "fitted 240 runs" in w.info.value


def test_a_real_scipy_defaults_bootstrap_is_stopped_at_its_next_refit(monkeypatch):
    """The real core loop: Stop raises Cancelled from the progress callback between two refits."""
    w = ScalingLab(bootstrap=20)
    w.background = True
    real, first, stop_clicked = mod.fit_source, threading.Event(), threading.Event()

    def watched(data, **kw):
        tick = kw["progress"]

        def progress(done, total):
            first.set()
            assert stop_clicked.wait(WAIT)       # hold the worker until Stop was clicked: no race on timing
            tick(done, total)

        return real(data, **{**kw, "progress": progress if tick else None})

    monkeypatch.setattr(mod, "fit_source", watched)
    w.reduce.value = "mean"                          # strict: synchronous, fast
    prev = w.fit
    w.stopping.value = "scipy defaults"
    assert first.wait(WAIT) and w.busy
    w.fit_button.click()
    stop_clicked.set()
    assert w.wait_task(WAIT) and w.task.outcome == "stopped"
    assert w.fit is prev and w.stopping.value == "strict" and "fit stopped after 0 of 20" in w.info.value  # none reported yet
