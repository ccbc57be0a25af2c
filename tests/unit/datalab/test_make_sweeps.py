"""make_sweeps: every sweep's runs are distinct, a Dask cluster gives the same file as training here, a rerun
resumes from the store without training, files are written atomically, and every shipped file loads."""
import json
import os

import numpy as np
import pytest

from workbench.datalab import make_sweeps, recipes as rec
from workbench.datalab.distill import load_distill
from workbench.datalab.make_sweeps import NAMES, make, recipes
from workbench.datalab.recipes import ShippedSweepError, read_sweep_file, write_sweep_file


@pytest.mark.parametrize("name", NAMES)
def test_recipes_are_distinct_runs(name):
    r = recipes(name)
    assert len({json.dumps(x, sort_keys=True) for x in r}) == len(r) and all(x["kind"] == name for x in r)
    with pytest.raises(SystemExit):
        recipes("nope")


def test_dask_equals_local_and_rerun_resumes(tmp_path, monkeypatch):
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=40) as cluster, distributed.Client(cluster) as client:
        p = make("distill", tmp_path / "s1", tmp_path / "dask", executor=client.get_executor(), progress=False,
                 steps=2, limit=3)
    q = make("distill", tmp_path / "s2", tmp_path / "here", progress=False, steps=2, limit=3)
    a, b = load_distill(p), load_distill(q)
    assert a.arms == ["hard labels"] and a.seeds == [0, 1, 2]
    assert np.array_equal(a.curves, b.curves) and not np.all(a.curves == a.curves[:, :1])   # seeds differ

    def boom(*args, **kw):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(rec, "train_recipe", boom)
    again = make("distill", tmp_path / "s2", tmp_path / "again", progress=False, steps=2, limit=3)
    assert np.array_equal(load_distill(again).curves, b.curves)


def test_sweep_file_written_atomically(tmp_path, monkeypatch):
    import workbench.atomic as atomic

    path = tmp_path / "traps.json"
    write_sweep_file(path, "traps", {"a": 1}, [{"copies": 0}], "cmd")
    before = path.read_bytes()

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_sweep_file(path, "traps", {"a": 2}, [{"copies": 1}], "cmd")
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["traps.json"]
    assert read_sweep_file(path, "traps", ("copies",))["settings"] == {"a": 1}
    with pytest.raises(ShippedSweepError, match="lacks"):
        read_sweep_file(path, "traps", ("copies", "p_value"))
    with pytest.raises(ShippedSweepError, match="no shipped sweep"):
        read_sweep_file(tmp_path / "none.json", "traps", ())


def test_every_shipped_sweep_loads_within_the_cpu_budget():
    from workbench.datalab.mixing import load_mixing
    from workbench.datalab.selection import load_selection
    from workbench.datalab.traps import load_traps

    for load in (load_selection, load_mixing, load_distill, load_traps):
        load()
    total = sum(json.loads((rec.SWEEP_DIR / f"{n}.json").read_text())["settings"]["cpu_s"] for n in NAMES)
    assert total < 12 * 60
    assert make_sweeps.STEPS == json.loads((rec.SWEEP_DIR / "mixing.json").read_text())["settings"]["steps"]
