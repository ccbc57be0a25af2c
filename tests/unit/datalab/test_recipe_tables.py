"""``recipes.index_runs`` and ``recipes.curves_by_seed``: the run tables that the distillation and selection
results (and their shipped sweeps) are assembled from."""
import numpy as np
import pytest

from workbench.datalab.errors import DataLabError
from workbench.datalab.recipes import curves_by_seed, index_runs


def run(arm, seed, curve):
    return {"arm": arm, "seed": seed, "val_loss": curve}


def test_rows_and_seeds_in_first_seen_order_and_curve_statistics():
    runs = [run("b", 1, [3.0, 2.0]), run("a", 1, [3.0, 1.0]), run("b", 0, [3.0, 4.0]), run("a", 0, [2.0, 1.0])]
    rows, seeds, table = index_runs(runs, "arm", "demo")
    assert rows == ["b", "a"] and seeds == [1, 0] and table[("a", 0)] is runs[3]
    curves, final, mean, sd = curves_by_seed(table, rows, seeds)
    assert curves.shape == (2, 2, 2) and final.tolist() == [[2.0, 4.0], [1.0, 1.0]]
    assert mean.tolist() == [3.0, 1.0]
    np.testing.assert_allclose(sd, [np.sqrt(2.0), 0.0])  # sample sd over seeds (ddof = 1)


def test_a_missing_pair_is_named():
    with pytest.raises(DataLabError, match=r"demo runs missing for \(arm, seed\) \[\('b', 1\)\]"):
        index_runs([run("a", 0, [1.0]), run("a", 1, [1.0]), run("b", 0, [1.0])], "arm", "demo")
