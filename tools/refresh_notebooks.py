"""Execute notebooks in place and keep only small, checkable outputs.

    python tools/refresh_notebooks.py notebooks/00_tour.ipynb [...]

Outputs are kept only for cells marked ``# NBVAL_CHECK_OUTPUT`` (what nbval compares in lax mode) and only
their text; widget views, BokehJS loaders and other JavaScript are dropped, so the committed files stay small.
"""
from __future__ import annotations

import sys
import time

import nbformat
from nbclient import NotebookClient

KEEP_MIME = ("text/plain",)


def strip(nb) -> None:
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cell.metadata.pop("execution", None)
        if "NBVAL_CHECK_OUTPUT" not in cell.source:
            cell.outputs = []
            cell.execution_count = None
            continue
        kept = []
        for out in cell.outputs:
            if out.output_type == "stream" and out.name == "stdout":
                kept.append(out)
            elif out.output_type in ("execute_result", "display_data"):
                data = {k: v for k, v in out.data.items() if k in KEEP_MIME}
                if data and "application/vnd.jupyter.widget-view+json" not in out.data:
                    out.data = data
                    out.metadata = {}
                    kept.append(out)
        cell.outputs = kept
    nb.metadata.pop("widgets", None)


def main(paths):
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        t0 = time.perf_counter()
        NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": "notebooks"}}).execute()
        strip(nb)
        nbformat.write(nb, path)
        print(f"{path}: executed in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
