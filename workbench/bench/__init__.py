"""Side-by-side measurements: ``python -m workbench.bench <area>`` runs one area's benchmark (see ``__main__``).

Each module measures one part of the workbench against a named reference on the same machine in the same run,
and prints the figures next to their targets. Wall-clock targets live here, not in the unit tests.

Lesson: ``notebooks/00_tour.ipynb``.
"""
