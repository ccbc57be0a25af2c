"""run_sweep: records, resume, crash consistency, store versioning, and a dask LocalCluster run."""
import json
import os

import numpy as np
import pytest

pytest.importorskip("workbench.models")
from workbench.models import GPTConfig  # noqa: E402
from workbench.scaling import StoreVersionError  # noqa: E402
from workbench.scaling.sweep import STORE_VERSION, SweepRunError, SweepStore, run_sweep  # noqa: E402

CONFIGS = [GPTConfig(vocab_size=257, n_layer=1, n_head=2, n_embd=16, block_size=32),
           GPTConfig(vocab_size=257, n_layer=1, n_head=2, n_embd=32, block_size=32)]
BUDGETS = [1024, 2048]           # 4 and 8 steps of 8 x 32 tokens


@pytest.fixture(scope="module")
def corpus():
    from workbench.data.corpus import load_corpus
    return load_corpus("python-docs")[:12000]


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory, corpus):
    path = tmp_path_factory.mktemp("sweep")
    return path, run_sweep(CONFIGS, BUDGETS, corpus, path, progress=False)


def test_sweep_records(local_sweep):
    path, res = local_sweep
    assert len(res.records) == 4 and len(res.trained) == 4 and not res.skipped
    r = res.records
    assert r[0].N < r[2].N                           # bigger config, more (non-embedding) parameters
    assert r[0].N_total - r[0].N == 257 * 16 + 32 * 16
    assert [x.D for x in r] == [1024, 2048, 1024, 2048]
    assert all(x.C == 6.0 * x.N * x.D for x in r)
    assert all(np.isfinite(x.val_loss) and 0 < x.val_loss < np.log(257) + 0.5 for x in r)
    arr = res.arrays()
    assert arr["N"].shape == (4,) and np.all(arr["loss"] > 0)
    files = os.listdir(path / "runs")
    assert sorted(files) == sorted(f"{x.key}.json" for x in r)
    assert json.loads((path / "store.json").read_text())["version"] == STORE_VERSION


def test_rerun_skips_finished_runs(local_sweep, corpus):
    path, res = local_sweep
    again = run_sweep(CONFIGS, BUDGETS, corpus, path, progress=False)
    assert again.trained == [] and len(again.skipped) == 4
    assert again.records == res.records


def test_crashing_run_keeps_store_consistent(tmp_path, corpus):
    bad = {"vocab_size": 257, "n_layer": 1, "n_head": 3, "n_embd": 16, "block_size": 32}  # 16 % 3 != 0
    with pytest.raises(SweepRunError) as err:
        run_sweep([CONFIGS[0], bad], BUDGETS[:1], corpus, tmp_path, progress=False)
    assert len(err.value.failures) == 1
    store = SweepStore(tmp_path)
    assert len(store.all()) == 1                     # the good run was kept
    assert not [f for f in os.listdir(tmp_path / "runs") if not f.endswith(".json")]
    res = run_sweep([CONFIGS[0]], BUDGETS[:1], corpus, tmp_path, progress=False)
    assert res.trained == [] and len(res.skipped) == 1


def test_interrupted_write_leaves_no_partial_record(tmp_path, corpus, monkeypatch):
    import workbench.scaling.sweep as sweep

    def boom(src, dst):
        raise KeyboardInterrupt

    store = SweepStore(tmp_path)
    monkeypatch.setattr(sweep.os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        run_sweep([CONFIGS[0]], BUDGETS[:1], corpus, store, progress=False)
    monkeypatch.undo()
    assert os.listdir(tmp_path / "runs") == []       # neither a half-written record nor a temp file
    res = run_sweep([CONFIGS[0]], BUDGETS[:1], corpus, tmp_path, progress=False)
    assert len(res.trained) == 1


def test_incompatible_store_version(tmp_path):
    (tmp_path / "store.json").write_text(json.dumps({"format": "workbench.scaling.sweep", "version": 999}))
    with pytest.raises(StoreVersionError, match="999"):
        SweepStore(tmp_path)
    other = tmp_path / "other"
    SweepStore(other)
    (other / "runs" / "abc.json").write_text(json.dumps({"format_version": 0}))
    with pytest.raises(StoreVersionError):
        SweepStore(other).get("abc")


def test_dask_local_cluster_gives_identical_results(local_sweep, corpus, tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    _, res = local_sweep
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=40) as cluster, distributed.Client(cluster) as client:
        remote = run_sweep(CONFIGS, BUDGETS, corpus, tmp_path, executor=client.get_executor(), progress=False)
    assert len(remote.trained) == 4
    for a, b in zip(res.records, remote.records):
        assert a.key == b.key
        assert (a.train_loss, a.val_loss, a.N, a.D) == (b.train_loss, b.val_loss, b.N, b.D)


def test_a_recurrent_config_sweeps_with_the_default_trainer(tmp_path, corpus):
    """RecurrentLM goes through run_sweep unchanged: its config names the architecture, the default trainer builds
    and trains it, and the trained weights are those of the same training done by hand."""
    import torch

    from workbench.data.corpus import train_val_split
    from workbench.models import RecurrentConfig, RecurrentLM, train
    from workbench.scaling.sweep import build_model, config_dict

    cfg = RecurrentConfig(vocab_size=257, n_layer=1, n_head=2, n_embd=16, d_state=4, block_size=32)
    res = run_sweep([cfg, CONFIGS[0]], [1024], corpus, tmp_path, progress=False)
    rec, gpt = res.records
    assert rec.config["architecture"] == "RecurrentLM" and "architecture" not in gpt.config
    assert rec.key != gpt.key and rec.steps == 4 and np.isfinite(rec.val_loss)
    assert rec.N_total == sum(p.numel() for p in RecurrentLM(cfg).parameters())
    torch.manual_seed(0)
    m = build_model(config_dict(cfg))
    from workbench.tokenizers import ByteTokenizer

    tr, va = train_val_split(torch.as_tensor(ByteTokenizer().encode(corpus)), 0.1)
    hist = train(m, tr, steps=4, batch_size=8, lr=3e-3, seed=0, val_ids=va, progress=False)
    assert hist.final_val_loss == pytest.approx(rec.val_loss, abs=1e-6)
    with pytest.raises(Exception, match="unknown architecture 'Mamba'"):
        build_model({"architecture": "Mamba"})
