"""The precomputed TinyGPT sweep shipped with the package, and its CSV round trip."""
import numpy as np

from workbench.scaling import fit_chinchilla, load_tinygpt_sweep
from workbench.scaling.make_sweep import BUDGETS, SIZES, write_csv


def test_shipped_sweep_spans_the_promised_range():
    s = load_tinygpt_sweep()
    a = s.arrays()
    assert len(s.records) >= 20
    assert np.log10(a["N"].max() / a["N"].min()) >= 1.5
    assert np.all(np.isfinite(a["loss"])) and np.all(a["loss"] > 0)
    assert sorted(set(a["D"])) == sorted(BUDGETS)
    assert len(set(a["N"])) == len(SIZES)
    np.testing.assert_allclose(a["C"], 6 * a["N"] * a["D"])


def test_more_tokens_lower_loss_at_every_size():
    a = load_tinygpt_sweep().arrays()
    for n in np.unique(a["N"]):
        m = a["N"] == n
        order = np.argsort(a["D"][m])
        assert np.all(np.diff(a["loss"][m][order]) < 0), n


def test_sweep_csv_round_trip(tmp_path):
    s = load_tinygpt_sweep()
    write_csv(s.records, tmp_path / "again.csv")
    again = load_tinygpt_sweep(tmp_path / "again.csv")
    assert again.records == s.records


def test_a_law_fits_the_shipped_sweep():
    a = load_tinygpt_sweep().arrays()
    f = fit_chinchilla(a["N"], a["D"], a["loss"], grid="coarse")
    pred = f.predict(a["N"], a["D"])
    assert np.max(np.abs(pred / a["loss"] - 1)) < 0.2
    assert f.alpha > 0 and f.beta > 0
