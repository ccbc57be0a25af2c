"""Activation patching (workbench.residual.patching): equal to TransformerLens's patching functions on the same GPT-2
weights, and to a plain-PyTorch one-patch-per-forward-pass loop (hooks on the HF modules themselves; the MLP patched
at its own output, OPT's at ``fc2``) on other families; batching, skipping identical cells, resuming at the first
patched block, progress, stopping and bad input."""
import numpy as np
import pytest
import torch

from tests import hf_families as F
from workbench.models import GPTConfig, TinyGPT
from workbench.models.layout import layout_of
from workbench.residual.errors import LengthMismatchError, OutOfRangeError, ResidualError
from workbench.residual.patching import activation_patching, logit_diff_metric
from workbench.tokenizers import ByteTokenizer

CLEAN = "def area(r): return 3.14 * r * r"


def prompts(m, at=5, T=10):
    ids = torch.tensor([m.tokenizer.encode(CLEAN)[:T]])
    bad = ids.clone()
    bad[0, at] = (int(ids[0, at]) + 11) % F.TOKENIZER_VOCAB
    return ids, bad


def most_moved(m, clean, corrupted):
    """The answer the corruption moves most, against the one it moves least (a well-conditioned metric)."""
    with torch.no_grad():
        d = m.forward(clean).logits[0, -1, :F.TOKENIZER_VOCAB] - m.forward(corrupted).logits[0, -1, :F.TOKENIZER_VOCAB]
    return int(d.argmax()), int(d.argmin())


def tiny():
    torch.manual_seed(0)
    return TinyGPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=64, vocab_size=257), ByteTokenizer()).eval()


# -- against TransformerLens on GPT-2 weights -----------------------------------------------------------------------

TL_FUNCS = {"resid_pre": "get_act_patch_resid_pre", "attn_out": "get_act_patch_attn_out",
            "mlp_out": "get_act_patch_mlp_out", "heads": "get_act_patch_attn_head_out_all_pos"}


@pytest.fixture(scope="module")
def gpt2_pair():
    pytest.importorskip("transformer_lens")
    from workbench.bench.residual_bench import tl_bridge

    m = F.loaded("gpt2")
    return m, tl_bridge(F.build("gpt2"), F.hf_tokenizer())


@pytest.mark.parametrize("what,direction", [("resid_pre", "denoise"), ("resid_pre", "noise"), ("attn_out", "denoise"),
                                            ("mlp_out", "denoise"), ("mlp_out", "noise"), ("heads", "denoise"),
                                            ("heads", "noise")])
def test_equals_transformer_lens_on_gpt2(gpt2_pair, what, direction):
    from transformer_lens import patching

    m, bridge = gpt2_pair
    clean, bad = prompts(m)
    a, w = most_moved(m, clean, bad)
    r = activation_patching(m, clean, bad, a, w, what=what, direction=direction, batch_size=5)
    with torch.no_grad():
        lc, cache_c = bridge.run_with_cache(clean)
        lx, cache_x = bridge.run_with_cache(bad)
    cd = float(lc[0, -1, a] - lc[0, -1, w])
    xd = float(lx[0, -1, a] - lx[0, -1, w])

    def metric(logits):
        return (logits[0, -1, a] - logits[0, -1, w] - xd) / (cd - xd)

    run, cache = (bad, cache_c) if direction == "denoise" else (clean, cache_x)
    with torch.no_grad():
        want = getattr(patching, TL_FUNCS[what])(bridge, run, cache, metric).numpy()
    assert r.effect.shape == want.shape
    np.testing.assert_allclose(r.effect, want, atol=1e-4)
    assert r.clean_raw == pytest.approx(cd, abs=1e-5) and r.corrupt_raw == pytest.approx(xd, abs=1e-5)
    assert np.ptp(want) > 0.05  # the sweep shows something


# -- a plain-PyTorch reference on other families --------------------------------------------------------------------

def _reference(m, clean, bad, a, w, what, mlp_module):
    """One forward pass per patch, full logits, hooks registered straight on the HF modules."""
    lay = layout_of(m)
    L, H, Dh, T = lay.n_layer, lay.n_head, lay.head_dim, clean.size(1)

    def run(ids, mod=None, pre=False, fn=None):
        rec = {}
        if mod is None:
            hooks = []
            for i in range(L):
                hooks.append(lay.blocks[i].register_forward_pre_hook(
                    lambda md, args, kw, i=i: rec.__setitem__(("resid_pre", i), (args[0] if args else
                                                                                kw["hidden_states"]).clone()),
                    with_kwargs=True))
                hooks.append(lay.w_o[i].register_forward_pre_hook(
                    lambda md, args, i=i: rec.__setitem__(("z", i), args[0].clone())))
                hooks.append(lay.w_o[i].register_forward_hook(
                    lambda md, args, out, i=i: rec.__setitem__(("attn_out", i), out.clone())))
                hooks.append(mlp_module(i).register_forward_hook(  # OPT's fc2 sees (B * T, D): keep (B, T, D)
                    lambda md, args, out, i=i: rec.__setitem__(("mlp_out", i), out.reshape(1, T, -1).clone())))
        elif pre:
            hooks = [mod.register_forward_pre_hook(fn, with_kwargs=True)]
        else:
            hooks = [mod.register_forward_hook(fn)]
        try:
            with torch.no_grad():
                lg = m.hf(input_ids=ids).logits[0, -1].double()
        finally:
            for h in hooks:
                h.remove()
        return lg, rec

    lc, rc = run(clean)
    lx, _ = run(bad)
    cd, xd = float(lc[a] - lc[w]), float(lx[a] - lx[w])
    n_cols = H if what == "heads" else T
    out = np.zeros((L, n_cols))
    for i in range(L):
        for j in range(n_cols):
            if what == "resid_pre":
                def fn(md, args, kw, i=i, j=j):
                    x = (args[0] if args else kw["hidden_states"]).clone()
                    x[0, j] = rc[("resid_pre", i)][0, j]
                    return ((x, *args[1:]), kw) if args else (args, {**kw, "hidden_states": x})
                lg, _ = run(bad, lay.blocks[i], True, fn)
            elif what == "heads":
                def fn(md, args, kw, i=i, j=j):
                    z = args[0].clone()
                    z[0, :, j * Dh:(j + 1) * Dh] = rc[("z", i)][0, :, j * Dh:(j + 1) * Dh]
                    return (z, *args[1:]), kw
                lg, _ = run(bad, lay.w_o[i], True, fn)
            else:
                def fn(md, args, out, i=i, j=j):
                    o = out.reshape(1, T, -1).clone()
                    o[0, j] = rc[(what, i)][0, j]
                    return o.reshape(out.shape)
                lg, _ = run(bad, lay.w_o[i] if what == "attn_out" else mlp_module(i), False, fn)
            out[i, j] = (float(lg[a] - lg[w]) - xd) / (cd - xd)
    return out


MLP = {"llama": lambda m, i: m.hf.model.layers[i].mlp, "gemma2": lambda m, i: m.hf.model.layers[i].mlp,
       "gpt_neox": lambda m, i: m.hf.gpt_neox.layers[i].mlp, "olmo2": lambda m, i: m.hf.model.layers[i].mlp,
       "opt": lambda m, i: m.hf.model.decoder.layers[i].fc2}


@pytest.mark.parametrize("family", sorted(MLP))
def test_equals_a_one_patch_per_pass_reference(family):
    m = F.loaded(family)
    clean, bad = prompts(m, at=4, T=8)
    a, w = most_moved(m, clean, bad)
    for what in ("resid_pre", "attn_out", "mlp_out", "heads"):
        r = activation_patching(m, clean, bad, a, w, what=what, batch_size=3)
        want = _reference(m, clean, bad, a, w, what, lambda i: MLP[family](m, i))
        np.testing.assert_allclose(r.effect, want, atol=1e-4, err_msg=f"{family} {what}")


# -- batching, skipping, structure ------------------------------------------------------------------------------------

def test_batch_size_skipping_and_resuming_do_not_change_the_numbers():
    m = F.loaded("qwen2")
    clean, bad = prompts(m, at=3, T=9)
    a, w = most_moved(m, clean, bad)
    for what in ("resid_pre", "mlp_out", "heads"):
        one = activation_patching(m, clean, bad, a, w, what=what, batch_size=1, skip_identical=False,
                                  resume_blocks=False)  # whole forward passes, one patch each
        many = activation_patching(m, clean, bad, a, w, what=what, batch_size=7)
        np.testing.assert_allclose(many.effect, one.effect, atol=1e-5)
        assert one.skipped == 0
    r = activation_patching(m, clean, bad, a, w, what="resid_pre")
    # every layer before the changed token, and (RoPE: no position in the stream) layer 0 after it
    assert r.skipped == 2 * 3 + (9 - 4)
    assert np.all(r.effect[:, :3] == r.corrupt_metric) and np.all(r.effect[0, 4:] == r.corrupt_metric)
    assert r.effect[0, 3] == pytest.approx(1.0, abs=1e-5)


def test_the_changed_token_at_the_first_layer_restores_everything():
    m = tiny()
    r = activation_patching(m, "ab cd", "ax cd", " ", "e")
    assert r.effect[0, 1] == pytest.approx(1.0, abs=1e-5)  # the clean embedding: the clean run
    assert r.clean_metric == pytest.approx(1.0) and r.corrupt_metric == pytest.approx(0.0)
    n = activation_patching(m, "ab cd", "ax cd", " ", "e", direction="noise")
    assert n.effect[0, 1] == pytest.approx(0.0, abs=1e-5)  # the corrupted embedding: the corrupted run
    assert r.rows == ["L0", "L1"] and r.cols[1] == "1 b/x" and r.cols[0] == "0 a"
    h = activation_patching(m, "ab cd", "ax cd", " ", "e", what="heads")
    assert h.effect.shape == (2, 2) and h.cols == ["H0", "H1"]


def test_a_custom_metric_gets_the_last_positions_logits():
    m = tiny()
    seen = []

    def metric(logits):
        seen.append(tuple(logits.shape))
        return logits[:, 32]

    r = activation_patching(m, "ab cd", "ax cd", " ", metric=metric, batch_size=4)
    with torch.no_grad():
        want = m.forward(torch.tensor([m.tokenizer.encode("ab cd")])).logits[0, -1, 32]
    assert r.clean_metric == pytest.approx(float(want), abs=1e-6)
    assert all(s[1] == 257 for s in seen) and max(s[0] for s in seen) == 4


def test_normalised_metric():
    met = logit_diff_metric(1, 2)
    clean = torch.tensor([[0.0, 3.0, 1.0]])
    corrupt = torch.tensor([[0.0, 1.0, 1.0]])
    cal = met.calibrate(clean, corrupt)
    assert float(cal(clean)[0]) == pytest.approx(1.0) and float(cal(corrupt)[0]) == pytest.approx(0.0)
    assert float(cal(torch.tensor([[0.0, 2.0, 1.0]]))[0]) == pytest.approx(0.5)
    assert "normalised" in cal.name and float(met(clean)[0]) == pytest.approx(2.0)


# -- progress and stopping ----------------------------------------------------------------------------------------

def test_progress_after_each_batch_and_stop_between_batches():
    m = tiny()
    calls = []
    r = activation_patching(m, "abcdefgh", "abcdefgx", "i", "j", batch_size=3, skip_identical=False,
                            progress=lambda d, n: calls.append((d, n)))
    assert calls == [(min(k, 16), 16) for k in range(3, 19, 3)]
    assert not r.stopped and r.done == 16
    asked = []

    def stop():
        asked.append(1)
        return len(asked) > 2

    s = activation_patching(m, "abcdefgh", "abcdefgx", "i", "j", batch_size=3, skip_identical=False, should_stop=stop)
    assert s.stopped and s.done == 6 and np.isnan(s.effect).sum() == 10
    np.testing.assert_allclose(s.effect.ravel()[:6], r.effect.ravel()[:6])

    class Cancelled(Exception):
        pass

    def cancel(d, n):
        raise Cancelled

    with pytest.raises(Cancelled):
        activation_patching(m, "abcdefgh", "abcdefgx", "i", "j", batch_size=3, progress=cancel)


def test_progress_is_told_when_no_pass_was_needed():
    m = tiny()
    calls = []
    # a raw metric (not normalised) allows identical prompts: every activation is the same, so no pass is needed
    r = activation_patching(m, "abcd", "abcd", "i", metric=lambda lg: lg[:, 5], what="heads",
                            progress=lambda d, n: calls.append((d, n)))
    assert r.skipped == r.total == 4 and calls == [(4, 4)]
    assert np.all(r.effect == r.clean_metric)


def test_a_long_sweep_without_progress_shows_a_bar(capsys):
    m = tiny()
    activation_patching(m, "abcdefgh", "xbcdefgh", "i", "j", batch_size=2, skip_identical=False)
    assert "patching resid_pre" in capsys.readouterr().err


# -- bad input --------------------------------------------------------------------------------------------------------

def test_prompts_of_different_lengths():
    m = tiny()
    with pytest.raises(LengthMismatchError, match="has 5 tokens and the corrupted one 7"):
        activation_patching(m, "ab cd", "ab cdef", " ")


def test_bad_choices_and_answers():
    m = F.loaded("llama")
    clean, bad = prompts(m)
    with pytest.raises(ResidualError, match="choose one of resid_pre, attn_out, mlp_out, heads"):
        activation_patching(m, clean, bad, 3, what="neurons")
    with pytest.raises(ResidualError, match="'denoise'"):
        activation_patching(m, clean, bad, 3, direction="sideways")
    with pytest.raises(ResidualError, match="encodes to"):
        activation_patching(m, clean, bad, "two words and more")
    with pytest.raises(OutOfRangeError, match="out of range"):
        activation_patching(m, clean, bad, 3, F.MODEL_VOCAB + 1)
    with pytest.raises(OutOfRangeError, match="has no text"):
        activation_patching(m, clean, bad, F.TOKENIZER_VOCAB + 1)
    with pytest.raises(ResidualError, match="nothing for a patch to restore"):
        activation_patching(m, clean, clean, 3, 4)
    with pytest.raises(ResidualError, match="batch_size"):
        activation_patching(m, clean, bad, 3, 4, batch_size=0)
