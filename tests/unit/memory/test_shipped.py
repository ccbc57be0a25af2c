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
        assert res.accuracy.shape == (3, len(make_sweeps.TRAIN_SIZES), len(make_sweeps.seeds(name)))
    else:
        assert len(res.labels) == n_models


def test_shipped_reversal_run_reproduces():
    res = reversal.load_reversal()
    i = res.augmentation.index("none")
    again = reversal.run_one(reversal.ReversalSetting("transformer", "none", 0), make_sweeps.CFG["reversal"])
    assert again["forward"] == res.forward[i, 0] and again["reverse"] == res.reverse[i, 0]
    assert np.allclose(again["probe_reverse"], res.probe_reverse[i, 0])


def test_shipped_icl_shows_in_context_learning_of_conjunctions_and_the_mixture_effect_in_part():
    """What the shipped ICL sweep shows (the numbers are in icl.py's docstring and notebook 08): every model trained
    on conjunctions, both seeds, ends clearly below the majority-label error on conjunction prompts and below a
    learner that only copies seen labels, appearing over the checkpoints; no model comes near the optimal learner;
    parities are learned no better than copying; a model trained on one class does worse on the other than the
    mixture model, though no longer at chance."""
    res = icl.load_icl()
    conj, par = res.classes.index("conjunction"), res.classes.index("parity")
    per_seed = res.error[:, :, :, -8:].mean(-1)  # (models, seeds, classes): error over the last 8 examples
    late, copier = res.late_error(), res.lookup[:, -8:].mean(-1)
    m = {mx: res.labels.index(f"transformer, trained on {mx}") for mx in ("conjunction", "parity", "mixed")}
    rec = next(i for i, lab in enumerate(res.labels) if lab.startswith("recurrent"))
    assert res.settings["init"] == "torch" and res.majority.tolist() == [0.5, 0.5]
    for i in (m["conjunction"], m["mixed"], rec):  # in-context learning of conjunctions, in every seed
        assert (per_seed[i, :, conj] < 0.3).all()
        assert late[i, conj] < copier[conj] - 0.05
    assert per_seed[rec, :, conj].max() < 0.2  # the recurrent model does best here
    curve = res.curve[m["mixed"], :, :, conj, -8:].mean(-1)  # (seeds, checkpoints)
    assert (curve[:, 0] > 0.4).all() and (curve[:, -1] < 0.3).all()  # it appears over training
    first = res.error[m["mixed"], :, conj, 0].mean()
    assert first > 0.45 and late[m["mixed"], conj] < first - 0.2  # it falls with the examples
    assert (late[:, conj] > res.optimal[conj, -8:].mean() + 0.08).all()  # far from optimal
    assert (late[:, par] > copier[par] - 0.02).all()  # parities: no better than copying
    # the mixture effect, in part: outside its pretraining class a model does worse than the mixture model ...
    assert late[m["conjunction"], par] > late[m["mixed"], par] + 0.05
    assert late[m["parity"], conj] > late[m["mixed"], conj] + 0.1
    assert 0.3 < late[m["parity"], conj] < 0.45 and 0.4 < late[m["conjunction"], par] < 0.48  # ... but not at chance


def test_shipped_answer_format_shows_the_reversed_transition_in_part():
    """What the shipped answer-format sweep shows (answer_format.py's docstring, notebook 08): from 250 to 1,000
    problems reversed output goes from memorising to adding in every seed, plain in only one; the scratchpad is best;
    with 250 problems nothing generalises."""
    res = AF.load_answer_format()
    acc = {f: res.accuracy[i] for i, f in enumerate(res.formats)}  # (N, S) per format
    j250, j1000 = list(res.n_train).index(250), list(res.n_train).index(1000)
    assert np.all(acc["reversed"][j1000] >= 0.9) and np.all(acc["scratchpad"][j1000] >= 0.9)
    assert acc["plain"][j1000].min() < 0.5 < acc["plain"][j1000].max()  # one seed of two
    assert all(np.all(acc[f][j250] < 0.25) for f in res.formats)
