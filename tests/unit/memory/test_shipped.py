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
    assert 0 < res.cpu_s < {"recall": 1500, "icl": 1200}.get(name, 600)  # recall ~25, icl ~20 CPU-minutes at most
    for field in ("accuracy", "accuracy_twice", "by_position", "error", "forward", "reverse", "curve"):
        v = getattr(res, field, None)
        if v is not None:
            assert np.all((v >= 0) & (v <= 1)), field
    n_models = len(make_sweeps.recipes(name)) // len(make_sweeps.seeds(name))
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


def test_shipped_icl_shows_in_context_learning_of_conjunctions_and_the_mixture_effect():
    """What the shipped ICL sweep shows (the numbers are in icl.py's docstring and notebook 08): the transformers
    trained on conjunctions (one seed of two) or on the mixture (both seeds) end clearly below the majority-label
    error on conjunction prompts and fall as examples accumulate; a model trained only on the other class stays at
    the majority error; no model comes near the optimal learner."""
    res = icl.load_icl()
    conj, par = res.classes.index("conjunction"), res.classes.index("parity")
    per_seed = res.error[:, :, :, -8:].mean(-1)  # (models, seeds, classes): error over the last 8 examples
    m = {mx: res.labels.index(f"transformer, trained on {mx}") for mx in ("conjunction", "parity", "mixed")}
    assert res.majority.tolist() == [0.5, 0.5]
    assert per_seed[m["conjunction"], :, conj].min() < 0.35  # in-context learning appeared (in seed 0)
    assert (per_seed[m["mixed"], :, conj] < 0.4).all()  # in both seeds of the mixture
    first = res.error[m["mixed"], :, conj, 0].mean()
    assert first > 0.45 and res.late_error()[m["mixed"], conj] < first - 0.1  # it falls with the examples
    for i, k in ((m["conjunction"], par), (m["parity"], conj)):  # outside the pretraining mixture: at chance
        assert abs(res.late_error()[i, k] - 0.5) < 0.03
    assert (res.late_error()[:, conj] > res.optimal[conj, -8:].mean() + 0.15).all()  # far from optimal
