"""The shipped sweeps: each loads, matches the settings its command uses, holds sane numbers, and one run
reproduces exactly when retrained."""
from __future__ import annotations

import numpy as np
import pytest

from workbench.memory import answer_format as AF
from workbench.memory import icl, make_sweeps, recall, reversal

LOADERS = {"recall": recall.load_recall, "icl": icl.load_icl, "reversal": reversal.load_reversal,
           "answer_format": AF.load_answer_format}


@pytest.mark.parametrize("name", make_sweeps.NAMES)
def test_shipped_sweep_loads_with_its_commands_settings(name):
    res = LOADERS[name]()
    assert res.settings == {**res.settings, **make_sweeps.CFG[name]}
    assert 0 < res.cpu_s < 600
    for field in ("accuracy", "accuracy_twice", "by_position", "error", "forward", "reverse", "curve"):
        v = getattr(res, field, None)
        if v is not None:
            assert np.all((v >= 0) & (v <= 1)), field
    n_models = len(make_sweeps.recipes(name)) // len(make_sweeps.SEEDS)
    if name == "answer_format":
        assert res.accuracy.shape == (3, len(make_sweeps.TRAIN_SIZES), len(make_sweeps.SEEDS))
    else:
        assert len(res.labels) == n_models


def test_shipped_reversal_run_reproduces():
    res = reversal.load_reversal()
    i = res.augmentation.index("none")
    again = reversal.run_one(reversal.ReversalSetting("transformer", "none", 0), make_sweeps.CFG["reversal"])
    assert again["forward"] == res.forward[i, 0] and again["reverse"] == res.reverse[i, 0]
    assert np.allclose(again["probe_reverse"], res.probe_reverse[i, 0])
