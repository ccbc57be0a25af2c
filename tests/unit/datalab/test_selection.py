"""Perplexity-based selection: chunk scores equal the model's own evaluation, bands are the quantile slices of
the scores, bad bands are refused, live runs report progress and stop, the shipped sweep loads."""
import numpy as np
import pytest

from workbench.datalab.recipes import BOS, ShippedSweepError, chunk, corpus_split
from workbench.datalab.selection import (BandError, load_selection, run_selection, score_chunks, select_band,
                                         select_score_range)
from workbench.models import evaluate, load_pretrained


def test_chunk_scores_equal_evaluate():
    model = load_pretrained("docs-byte-draft")
    chunks = chunk(corpus_split("python-docs")[1][:5 * 100], 100)
    got = score_chunks(model, chunks, batch_size=2)
    # evaluate scores min(block, len - 1) tokens per window: one padding token makes its window the whole chunk
    want = [evaluate(model, np.r_[c, 0], block_size=100, bos=BOS) for c in chunks]
    assert np.allclose(got, want, atol=1e-5)
    assert np.allclose(score_chunks(model, chunks[:, :50], bos=None), [evaluate(model, np.array(c[:50])) for c in chunks],
                       atol=1e-5)


def test_named_bands_are_quantile_slices():
    rng = np.random.default_rng(0)
    s = rng.normal(size=300)
    low, mid, high = (select_band(s, b) for b in ("low", "middle", "high"))
    assert len(low) == len(mid) == len(high) == 100
    assert sorted(np.r_[low, mid, high].tolist()) == list(range(300))     # a partition of the chunks
    q1, q2 = np.quantile(s, [1 / 3, 2 / 3])
    assert s[low].max() <= q1 <= s[mid].min() and s[mid].max() <= q2 <= s[high].min()
    r = select_band(s, "random", seed=4)
    assert len(r) == 100 and len(set(r)) == 100 and not np.array_equal(r, select_band(s, "random", seed=5))
    assert np.array_equal(select_band(s, (0.1, 0.2)), np.sort(np.argsort(s)[30:60]))
    assert np.array_equal(select_score_range(s, -0.5, 0.5), np.flatnonzero(np.abs(s) <= 0.5))


@pytest.mark.parametrize("band", ["top", (0.5, 0.5), (-0.1, 0.3), (0.2, 1.2)])
def test_bad_band_quantiles(band):
    with pytest.raises(BandError):
        select_band(np.arange(10.0), band)


def test_score_range_outside_scores():
    with pytest.raises(BandError, match="outside the scores' range"):
        select_score_range(np.array([1.0, 2.0, 3.0]), 5.0, 6.0)
    with pytest.raises(BandError, match="no chunk"):
        select_score_range(np.array([1.0, 2.0, 3.0]), 1.2, 1.8)


def test_live_run_progress_and_stop():
    calls = []
    res = run_selection(bands=("low", "high", "random"), steps=4, progress=lambda d, t: calls.append((d, t)),
                        should_stop=lambda: len(calls) >= 8)
    assert res.stopped and res.bands == ["low", "high"] and res.curves.shape == (2, 1, len(res.steps))
    assert calls[-1] == (8, 12)
    lo, hi = res.score_range[0, 0], res.score_range[1, 0]
    assert lo[1] <= hi[0]                               # the low band's scores lie below the high band's


def test_shipped_sweep_loads(tmp_path):
    res = load_selection()
    assert set(res.bands) == {"low", "middle", "high", "random"} and len(res.seeds) >= 3
    assert res.winner == res.bands[int(np.argmin(res.final.mean(1)))]
    assert np.allclose(res.sd, res.final.std(1, ddof=1))
    bad = tmp_path / "s.json"
    bad.write_text('{"format": "workbench.datalab.mixing", "version": 1}')
    with pytest.raises(ShippedSweepError, match="expected format"):
        load_selection(bad)
