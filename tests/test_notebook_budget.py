"""Every notebook runs top to bottom on the CPU within its time and memory budget (kernel peak RSS).

nbval (``pytest --nbval-lax notebooks``) checks the outputs; this test checks the budgets, running each
notebook once more in a fresh kernel with a final cell that reports the kernel's own peak RSS.
"""
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
# The tour must stay under 1.2 GB; every lab under 1.5 GB (Binder gives 2 GB). All under 90 s.
PEAK_RSS_MB = {"00_tour.ipynb": 1200}
DEFAULT_RSS_MB, WALL_S = 1500, 90


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_budget(path):
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(
        "import resource; print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"))
    t0 = time.perf_counter()
    NotebookClient(nb, timeout=WALL_S, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    wall = time.perf_counter() - t0
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    peak_mb = int(text.split("PEAK_RSS_KB")[1].split()[0]) / 1024
    print(f"{path.name}: {wall:.1f} s, peak kernel RSS {peak_mb:.0f} MB")
    assert wall < WALL_S, f"{path.name} took {wall:.0f} s (budget {WALL_S} s)"
    assert peak_mb < PEAK_RSS_MB.get(path.name, DEFAULT_RSS_MB), f"{path.name} peaked at {peak_mb:.0f} MB"
