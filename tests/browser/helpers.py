"""Driving a notebook in JupyterLab from Playwright."""
import io
import time

import numpy as np

WIDGET_ERRORS = ("Click to show javascript error", "Error displaying widget", "Failed to load model class")


def open_and_run_all(page, base_url: str, notebook: str, timeout_s: float = 150) -> None:
    """Open ``notebook`` (path under the server root), run all cells, and wait until every code cell has run."""
    page.goto(f"{base_url}/lab/tree/{notebook}?reset", wait_until="domcontentloaded")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)
    page.wait_for_timeout(1000)
    select = page.locator(".jp-Dialog button.jp-mod-accept")  # a kernel chooser, if JupyterLab asks
    if select.count():
        select.first.click()
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.commands", timeout=60_000)
    # wait for the kernel to be ready before running
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=90_000)
    # fire and forget: the command's promise only settles when every cell has run. The command acts on the
    # current notebook, so activate its panel first; if nothing was queued (no cell shows [*] or a number), say
    # because the panel was not current yet on a busy machine, issue it again.
    run_all = """() => {
        const panel = window.jupyterapp.shell.currentWidget;
        if (panel) window.jupyterapp.shell.activateById(panel.id);
        setTimeout(() => window.jupyterapp.commands.execute('notebook:run-all-cells'), 0);
    }"""
    page.evaluate(run_all)
    page.wait_for_timeout(2000)
    deadline = time.time() + timeout_s
    issued, tries, stalled = time.time(), 1, None
    while time.time() < deadline:
        state = page.evaluate("""() => {
            const nb = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook');
            const prompts = [...nb.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')].map(p => p.textContent);
            return {n: prompts.length, done: prompts.filter(t => /\\[\\d+\\]/.test(t)).length,
                    busy: prompts.filter(t => t.includes('*')).length};
        }""")
        if state["n"] and state["done"] == state["n"] and not state["busy"]:
            return
        if not state["done"] and not state["busy"] and time.time() - issued > 15 and tries < 4:
            page.evaluate(run_all)
            issued, tries = time.time(), tries + 1
        # Run All stops at a cell that raises (or when the kernel dies): some cells ran, none is queued. Say so, with
        # the error the page shows, instead of waiting out the timeout.
        stalled = (stalled or time.time()) if state["done"] and not state["busy"] else None
        if stalled and time.time() - stalled > 20:
            raise AssertionError(f"Run All stopped after {state['done']} of {state['n']} code cells: "
                                 f"{_error_outputs(page) or 'no error output shown (did the kernel die?)'}")
        time.sleep(1)
    raise AssertionError(f"notebook did not finish running within {timeout_s} s: {state}; {_error_outputs(page)}")


def _error_outputs(page) -> str:
    """The first error output in the page (its last 800 characters), or ''."""
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    shown = [t for t in errors.all_inner_texts() if "Traceback" in t or "Error" in t]
    return shown[0][-800:] if shown else ""


def assert_no_widget_errors(page) -> None:
    body = page.inner_text("body")
    for marker in WIDGET_ERRORS:
        assert marker not in body, f"a widget failed to render: found {marker!r}"
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    tracebacks = [t for t in errors.all_inner_texts() if "Traceback" in t or "Error" in t]
    assert not tracebacks, f"a cell raised: {tracebacks[0][:500]}"


def colourful_pixels(png: bytes) -> int:
    """How many pixels of a screenshot are clearly coloured (not white, grey or black): drawn glyphs."""
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return int(((rgb.max(-1) - rgb.min(-1)) > 60).sum())
