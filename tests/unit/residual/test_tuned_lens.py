"""The tuned lens: the translator against a hand-written affine map, identity init = the logit lens, exact file round
trips, a lens for another model refused with what differs, and the shipped lenses beating the logit lens on
held-out text at every intermediate boundary."""
import json

import numpy as np
import pytest
import torch

from workbench.models import GPTConfig, TinyGPT, load_pretrained
from workbench.models.pretrained import available
from workbench.residual import (LensMismatchError, ResidualError, TunedLens, lens_kl_by_layer, lens_logits,
                                load_tuned_lens, logit_lens, model_hash, residual_stack, train_tuned_lens)
from workbench.residual.make_lenses import corpus_ids, heldout_windows
from workbench.residual.tuned_lens import LENS_JSON, LENS_WEIGHTS, windows
from workbench.tokenizers import ByteTokenizer

SHIPPED = ["docs-byte", "docs-byte-draft", "docs-bpe", "docs-bpe-draft"]
TEXT = "The for statement iterates over the items of any sequence."


def tiny(seed=0, n_layer=2, n_embd=32):
    torch.manual_seed(seed)
    tok = ByteTokenizer()
    return TinyGPT(GPTConfig(vocab_size=tok.vocab_size, n_layer=n_layer, n_head=2, n_embd=n_embd, block_size=64),
                   tokenizer=tok, name="tiny").eval()


def randomised(lens, seed=0, scale=0.05):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        lens.A.copy_(torch.randn(lens.A.shape, generator=g) * scale)
        lens.b.copy_(torch.randn(lens.b.shape, generator=g) * scale)
    return lens


def test_identity_init_is_the_logit_lens_exactly():
    m = tiny()
    lens = TunedLens.for_model(m)
    assert not lens.A.any() and not lens.b.any()
    resid = residual_stack(m, TEXT).resid[:, 0]
    with torch.no_grad():
        assert torch.equal(lens.translate(resid), resid)
        assert torch.equal(lens_logits(m, resid, lens), lens_logits(m, resid))
    a, b = logit_lens(m, TEXT, lens=lens), logit_lens(m, TEXT)
    assert a.kind == "tuned" and b.kind == "logit"
    for f in ("top_ids", "top_probs", "entropy", "final_rank", "final_prob", "kl", "first_stable"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))


def test_translator_is_the_affine_map_and_spares_the_last_boundary():
    m = tiny()
    lens = randomised(TunedLens.for_model(m))
    resid = residual_stack(m, TEXT).resid[:, 0]  # (L + 1, T, D)
    with torch.no_grad():
        got = lens.translate(resid)
        for l in range(m.config.n_layer):
            ref = resid[l] + resid[l] @ lens.A[l].T + lens.b[l]
            torch.testing.assert_close(got[l], ref, atol=1e-6, rtol=1e-6)
        assert torch.equal(got[-1], resid[-1])
        ref_logits = torch.nn.functional.layer_norm(got, (32,), m.ln_f.weight, m.ln_f.bias) @ m.lm_head.weight.T
        torch.testing.assert_close(lens_logits(m, resid, lens), ref_logits, atol=1e-5, rtol=1e-5)
    r = logit_lens(m, TEXT, k=4, lens=lens)
    np.testing.assert_allclose(r.top_probs, ref_logits.double().softmax(-1).topk(4).values.numpy(), atol=1e-5)
    np.testing.assert_allclose(r.kl[-1], 0.0, atol=1e-6)


def test_save_load_round_trip_is_exact(tmp_path):
    m = tiny()
    lens = randomised(TunedLens.for_model(m, meta={"note": "x"}))
    lens.save(tmp_path / "f32")
    back = TunedLens.load(tmp_path / "f32", m)
    assert torch.equal(back.A, lens.A) and torch.equal(back.b, lens.b)
    assert back.meta == {"note": "x"} and back.model_hash == model_hash(m)
    lens.save(tmp_path / "f16", dtype=torch.float16)  # stored rounded to float16, loaded back as float32
    half = TunedLens.load(tmp_path / "f16", m)
    assert half.A.dtype == torch.float32
    assert torch.equal(half.A, lens.A.detach().half().float()) and torch.equal(half.b, lens.b.detach().half().float())
    assert (tmp_path / "f16" / LENS_WEIGHTS).stat().st_size < (tmp_path / "f32" / LENS_WEIGHTS).stat().st_size
    assert json.loads((tmp_path / "f16" / LENS_JSON).read_text())["dtype"] == "float16"


def test_a_lens_for_another_model_is_refused_naming_what_differs(tmp_path):
    m = tiny(seed=0)
    lens = randomised(TunedLens.for_model(m))
    lens.save(tmp_path)
    with pytest.raises(LensMismatchError, match=r"model hash .* \(same shapes, other weights\)"):
        TunedLens.load(tmp_path, tiny(seed=1))  # same shapes, other weights
    with pytest.raises(LensMismatchError, match=r"n_layer 2 vs 3") as e:
        TunedLens.load(tmp_path, tiny(n_layer=3))
    assert "d_model" not in str(e.value)
    with pytest.raises(LensMismatchError, match=r"n_layer 2 vs 1; d_model 32 vs 64"):
        logit_lens(tiny(n_layer=1, n_embd=64), TEXT, lens=lens)
    with pytest.raises(LensMismatchError, match="model hash"):
        logit_lens(tiny(seed=1), TEXT, lens=lens)
    with pytest.raises(LensMismatchError, match="d_model 32 vs 64"):
        lens_logits(tiny(n_embd=64), torch.zeros(3, 4, 64), lens)
    shipped = load_tuned_lens("docs-byte")
    with pytest.raises(LensMismatchError, match=r"n_layer 4 vs 1; d_model 128 vs 64"):
        logit_lens(load_pretrained("docs-byte-draft"), TEXT, lens=shipped)
    with pytest.raises(LensMismatchError, match="vocab_size 258 vs 1024"):
        logit_lens(load_pretrained("docs-bpe"), TEXT, lens=shipped)


def test_model_hash_is_stable_and_sees_any_weight():
    a, b = load_pretrained("docs-byte"), load_pretrained("docs-byte")
    assert model_hash(a) == model_hash(b)
    with torch.no_grad():
        b.blocks[2].mlp.fc.weight[3, 5] += 1e-3  # one weight deep inside one block
    assert model_hash(a) != model_hash(b)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_lens_beats_the_logit_lens_on_held_out_text(name):
    assert name in available()
    m = load_pretrained(name)
    lens = load_tuned_lens(name)
    assert lens is not None and lens.meta["command"] == f"python -m workbench.residual.make_lenses {name}"
    assert (lens.A.any() or lens.b.any())
    found = load_tuned_lens(m)  # the same lens, found from the model by its hash
    assert torch.equal(found.A, lens.A) and torch.equal(found.b, lens.b)
    x = heldout_windows(m, n_windows=4)
    logit, tuned = lens_kl_by_layer(m, x), lens_kl_by_layer(m, x, lens)
    L = m.config.n_layer
    assert logit.shape == tuned.shape == (L + 1,)
    assert (tuned[:L] < logit[:L]).all(), (logit, tuned)  # every intermediate boundary
    assert abs(logit[L]) < 1e-5 and abs(tuned[L]) < 1e-5  # the last boundary is the model itself
    assert (lens.A.abs().max() < 60_000) and lens.A.isfinite().all()  # stored as float16 without overflow


def test_load_tuned_lens_for_unknown_models():
    assert load_tuned_lens(tiny()) is None
    with pytest.raises(ResidualError, match="no shipped model named 'nope'"):
        load_tuned_lens("nope")


def test_training_lowers_kl_leaves_the_model_alone_and_is_deterministic():
    m = load_pretrained("docs-byte-draft")
    before = model_hash(m)
    flags = [p.requires_grad for p in m.parameters()]
    train = corpus_ids(m, "train")[:20_000]
    seen = []
    kw = dict(steps=15, lr=1e-2, seq_len=64, batch_size=4, seed=3)
    lens = train_tuned_lens(m, train, progress=lambda s, n, loss: seen.append((s, n, loss)), **kw)
    assert [s for s, _, _ in seen] == list(range(1, 16)) and seen[-1][1] == 15
    assert seen[-1][2] < seen[0][2]
    assert model_hash(m) == before and [p.requires_grad for p in m.parameters()] == flags and not m.training
    x = windows(m, train, 64, [100, 5000, 12000])  # windows of the training text: the fit itself
    assert lens_kl_by_layer(m, x, lens)[0] < 0.5 * lens_kl_by_layer(m, x)[0]
    again = train_tuned_lens(m, train, **kw)
    assert torch.equal(again.A, lens.A) and torch.equal(again.b, lens.b)
    assert lens.meta["steps"] == 15 and lens.meta["seed"] == 3


@pytest.mark.parametrize("kw, match", [(dict(steps=0), "steps >= 1"), (dict(batch_size=0), "batch_size"),
                                       (dict(seq_len=1), "seq_len >= 2")])
def test_bad_training_arguments(kw, match):
    m = tiny()
    with pytest.raises(ResidualError, match=match):
        train_tuned_lens(m, list(range(200)), **kw)
    with pytest.raises(ResidualError, match="corpus has 10 tokens"):
        train_tuned_lens(m, list(range(10)), seq_len=32)
