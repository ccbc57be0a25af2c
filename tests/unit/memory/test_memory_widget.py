"""widgets.MemoryLab: the shipped sweep's numbers in each experiment's view, a live run in the background with progress
and Stop, curves that grow as checkpoints arrive, visible notices for bad input (and the widget recovers), and
export round trips. The sweeps drawn here are small hand-made files in the shipped format (loaded by the experiments'
own loaders), so the test does not depend on the shipped sweeps' training; the real ones are checked when present."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

pytest.importorskip("ipywidgets")
pytest.importorskip("workbench.memory.recall")

from workbench.memory import lab as glue  # noqa: E402
from workbench.memory.sweepfile import write_sweep  # noqa: E402

KEYS = ("recall", "icl", "reversal", "answer_format")


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _records(key: str, rng) -> tuple[dict, list]:
    r = lambda *shape: np.round(rng.random(shape), 3).tolist()  # noqa: E731
    ck = [50, 100]
    if key == "recall":
        cfg = {"max_pairs": 4}
        runs = [{"arch": a, "state_size": s, "seed": 0, "pairs": [1, 2, 4], "accuracy": r(3), "accuracy_twice": r(3),
                 "accuracy_first": r(3), "accuracy_head": r(3), "by_position": r(4), "checkpoints": ck,
                 "curve": r(2), "train_loss": 1.0, "cpu_s": 1.0}
                for a, s in (("transformer", None), ("recurrent", 2))]
    elif key == "icl":
        cfg = {"n_bits": 3, "n_examples": 6, "eval_rows": 8}
        runs = [{"arch": a, "mixture": "mixed", "state_size": s, "seed": 0, "error": r(2, 6), "checkpoints": ck,
                 "curve": r(2, 2, 6), "train_loss": 1.0, "cpu_s": 1.0} for a, s in (("transformer", None),
                                                                                 ("recurrent", 8))]
    elif key == "reversal":
        cfg = {"n_facts": 16, "n_layer": 2}
        runs = [{"arch": "transformer", "augmentation": g, "seed": 0, "forward": 0.9, "reverse": 0.1,
                 "both_reverse": 0.8, "checkpoints": ck, "curve_forward": r(2), "curve_reverse": r(2),
                 "probe_reverse": r(3), "probe_forward": r(3), "probe_chance": 0.5, "train_loss": 1.0, "cpu_s": 1.0}
                for g in ("none", "entity_reverse")]
    else:
        cfg = {"digits": 2}
        runs = [{"fmt": f, "n_train": n, "seed": 0, "accuracy": float(rng.random()), "checkpoints": ck,
                 "curve": r(2), "train_loss": 1.0, "cpu_s": 1.0} for f in ("plain", "reversed") for n in (100, 400)]
    return cfg, runs


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    d = tmp_path_factory.mktemp("sweeps")
    rng = np.random.default_rng(0)
    for key in KEYS:
        cfg, runs = _records(key, rng)
        write_sweep(d / f"{key}.json", key, {"cfg": cfg}, runs)
    return d


def _lab(sweeps, tmp_path, **kw):
    from widgets.memory_lab import MemoryLab

    return MemoryLab(sweep_dir=sweeps, export_dir=tmp_path, **kw)


def _rows(table, label):
    idx = [i for i, lab in enumerate(table["label"]) if lab == label]
    return [table["x"][i] for i in idx], [table["y"][i] for i in idx]


def _assert_shows(lab, key, result, prefix=""):
    v = glue.view(key, result, lab.klass.value, prefix)
    tables = lab.export_tables()
    for name, series in (("main", v.main), ("curves", v.curves)):
        for s in series:
            x, y = _rows(tables[name], s.label)
            assert x == pytest.approx(s.x) and y == pytest.approx(s.y), (name, s.label)


def test_each_experiment_shows_its_shipped_sweep(sweeps, tmp_path):
    from workbench.memory.icl import load_icl
    from workbench.memory.recall import load_recall

    lab = _lab(sweeps, tmp_path, experiment="recall")
    res = load_recall(sweeps / "recall.json")
    _assert_shows(lab, "recall", res)
    x, y = _rows(lab.export_tables()["main"], "transformer, once")  # the record's own numbers
    raw = json.loads((sweeps / "recall.json").read_text())["runs"][0]
    assert x == raw["pairs"] and y == pytest.approx(raw["accuracy"])
    shown = [it.label.value for it in lab.main_legend.items if it.visible]  # a key for every line, as text
    assert shown[:2] == ["transformer, once", "transformer, read twice"]
    assert list(lab.fig.xaxis.ticker.ticks) == [1, 2, 4]  # whole pairs only
    for name, key in glue.EXPERIMENTS.items():
        lab.experiment.value = name
        assert lab.shipped_note.value == "", lab.shipped_note.value
        _assert_shows(lab, key, glue.load_shipped(key, sweeps / f"{key}.json"))
    lab.experiment.value = "in-context learning"
    lab.klass.value = "parity"
    res = load_icl(sweeps / "icl.json")
    x, y = _rows(lab.export_tables()["main"], "optimal learner")
    assert y == pytest.approx(res.optimal[1].tolist())
    assert lab.klass.layout.display == "" and lab.pairs.disabled and not lab.examples.disabled


@pytest.mark.parametrize("key", KEYS)
def test_real_shipped_sweeps_when_present(key, tmp_path):
    from workbench.memory.errors import ShippedSweepError

    try:
        res = glue.load_shipped(key)
    except ShippedSweepError:
        pytest.skip(f"no shipped {key} sweep in this checkout")
    from widgets.memory_lab import MemoryLab

    name = next(n for n, k in glue.EXPERIMENTS.items() if k == key)
    lab = MemoryLab(experiment=name, export_dir=tmp_path)
    _assert_shows(lab, key, res)


def test_live_run_draws_beside_the_sweep(sweeps, tmp_path):
    lab = _lab(sweeps, tmp_path, experiment="in-context learning", examples=6, steps=10, background=False)
    lab.train_button.click()
    assert "done" in lab.info.value, lab.info.value
    assert lab.live_result is not None and lab.progress.value == lab.progress.max == 20
    _assert_shows(lab, "icl", lab.live_result, "live: ")
    labels = set(lab.export_tables()["main"]["label"])
    assert "transformer, trained on mixed" in labels and "live: recurrent (state 8), trained on mixed" in labels


def test_train_runs_in_background_with_progress_and_stop(sweeps, tmp_path):
    lab = _lab(sweeps, tmp_path, experiment="recall", archs=("transformer",), pairs=4, steps=400, background=True)
    lab.train_button.click()
    assert lab.busy and lab.train_button.description == "Stop"
    lab.experiment.value = "recall"  # the widget reacts while the run goes on (a no-op change here)
    t0 = time.time()
    while not lab.live_curves and time.time() - t0 < 60:  # the first checkpoint (step 80) is drawn
        time.sleep(0.05)
    assert lab.live_curves and lab.busy
    lab.train_button.click()  # a click while busy stops; never a second run
    assert lab.wait_task(60)
    assert not lab.busy and lab.train_button.description == "Train"
    assert "stopped early" in lab.info.value, lab.info.value
    assert lab.live_result is not None and 80 <= lab.live_result.checkpoints[-1] < 400
    assert 80 <= lab.progress.value < 400


def test_curves_grow_as_checkpoints_arrive(sweeps, tmp_path):
    lab = _lab(sweeps, tmp_path, experiment="recall", archs=("transformer",), pairs=4, steps=40, background=True)
    counts = []
    orig = lab._redraw

    def spy():
        orig()
        counts.append(len(lab.export_tables()["curves"]["x"]))

    lab._redraw = spy
    lab.train_button.click()
    assert lab.wait_task(120)
    live = list(counts)
    assert lab.live_result is not None
    assert len(set(live)) >= 3, live  # the curve was redrawn with more points as checkpoints came (every 8 steps)
    x, y = _rows(lab.export_tables()["curves"], "live: transformer")
    assert x == [8.0, 16.0, 24.0, 32.0, 40.0] and y == pytest.approx(lab.live_result.curve[0, 0].tolist())


@pytest.mark.parametrize("change, kind, text", [
    (dict(pairs=20), "TaskRangeError", "number of pairs"),
    (dict(state_size=100), "TaskRangeError", "state size"),
    (dict(experiment="in-context learning", examples=150), "TaskRangeError", "in-context examples"),
    (dict(experiment="answer format"), "ModelCapabilityError", "transformers only"),
    (dict(archs=()), "ModelCapabilityError", "at least one architecture"),
])
def test_bad_input_is_a_notice_and_the_widget_recovers(sweeps, tmp_path, change, kind, text):
    lab = _lab(sweeps, tmp_path, experiment=change.get("experiment", "recall"), steps=10, pairs=2, examples=4,
               background=False)
    for k, v in change.items():
        if k == "archs":
            for b in lab.arch_boxes.values():
                b.value = False
        elif k != "experiment":
            getattr(lab, k).value = v
    lab.train_button.click()
    assert kind in lab.info.value and text in lab.info.value and "#b00020" in lab.info.value
    assert lab.live_result is None and not lab.busy
    # recover: valid settings train
    lab.pairs.value, lab.state_size.value, lab.examples.value = 2, 4, 4
    lab.arch_boxes["transformer"].value = True
    if lab.key == "answer_format":
        lab.arch_boxes["recurrent"].value = False
        lab.steps.value = 10
        return  # (training three formats is the slow part: the recovery is that the notice cleared on the next try)
    lab.arch_boxes["recurrent"].value = False
    lab.train_button.click()
    assert "done" in lab.info.value and lab.live_result is not None


def test_missing_sweep_is_a_notice(tmp_path):
    from widgets.memory_lab import MemoryLab

    lab = MemoryLab(sweep_dir=tmp_path / "nowhere", export_dir=tmp_path, steps=10, pairs=2, archs=("recurrent",),
                    state_size=2, background=False)
    assert "no shipped sweep" in lab.shipped_note.value and "make_sweeps" in lab.shipped_note.value
    lab.train_button.click()
    assert "done" in lab.info.value
    labels = set(lab.export_tables()["main"]["label"])
    assert labels == {"live: recurrent (state 2), once", "live: recurrent (state 2), read twice"}


def test_export_round_trips_the_numbers_shown(sweeps, tmp_path):
    lab = _lab(sweeps, tmp_path, experiment="answer format")
    shown = lab.export_tables()
    doc = json.loads(lab.export_data(tmp_path / "m.json").read_text())
    for name in ("main", "curves"):
        got = doc["tables"][name] if "tables" in doc else doc[name]
        assert got["label"] == shown[name]["label"] and got["y"] == pytest.approx(shown[name]["y"])
    npz = np.load(lab.export_data(tmp_path / "m.npz"), allow_pickle=False)
    assert npz["main.y"].tolist() == pytest.approx(shown["main"]["y"])
    png = lab.export_png(tmp_path / "m.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "saved PNG" in lab.info.value


def test_longer_than_trained_and_wrong_checkpoint_are_notices(sweeps, tmp_path):
    lab = _lab(sweeps, tmp_path, experiment="recall", pairs=2, state_size=4, steps=10, background=False)
    assert lab.models_row.layout.display == ""
    lab.evaluate_button.click()  # nothing trained yet
    assert "ModelCapabilityError" in lab.info.value and "no live recall model" in lab.info.value
    lab.train_button.click()
    assert set(lab.live_models) == {"transformer", "recurrent (state 4)"}
    assert lab.curve_fig.title.text.endswith("; live: accuracy at 2 pairs")  # the sweep's curves are at 4 pairs
    lab.evaluate_button.click()
    assert "recall at 2 pairs" in lab.info.value and "transformer" in lab.info.value
    lab.pairs.value = 5  # rows longer than the models were trained on
    lab.evaluate_button.click()
    assert "SequenceTooLongError" in lab.info.value and "longer than" in lab.info.value
    lab.pairs.value = 2
    lab.save_button.click()
    gpt_dir, rnn_dir = tmp_path / "memory-models" / "transformer-0", tmp_path / "memory-models" / "recurrent-1"
    assert (gpt_dir / "config.json").exists() and (rnn_dir / "config.json").exists()
    lab.checkpoint_path.value, lab.load_as.value = str(gpt_dir), "recurrent"  # a TinyGPT loaded as recurrent
    lab.load_button.click()
    assert "CheckpointError" in lab.info.value and "not a RecurrentLM" in lab.info.value
    lab.checkpoint_path.value = str(rnn_dir)
    lab.load_button.click()
    assert "loaded" in lab.info.value and "loaded recurrent" in lab.live_models
    acc = lab.evaluate(2)
    assert acc["loaded recurrent"] == pytest.approx(acc["recurrent (state 4)"])  # the same weights
    lab.experiment.value = "reversal"
    assert lab.models_row.layout.display == "none"
