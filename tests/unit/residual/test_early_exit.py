"""Early-exit drafts (workbench.residual.early_exit): the first k blocks read out by a lens, as a model of the
interface. References: the model itself (k = L), the logit lens from a plain residual_stack + head_of (k < L),
the draft's own full forward (cached steps), plain greedy decoding (greedy self-speculative decoding)."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from tests import hf_families as F  # noqa: E402
from workbench.decoding import Pipeline, greedy, speculative_decode  # noqa: E402
from workbench.models import GPTConfig, TinyGPT  # noqa: E402
from workbench.models.kv_cache import KVCache  # noqa: E402
from workbench.models.layout import layout_of  # noqa: E402
from workbench.residual import LensMismatchError, OutOfRangeError, ResidualError, TunedLens  # noqa: E402
from workbench.residual.early_exit import (EarlyExitModel, early_exit, exit_report, kv_cache_bytes,  # noqa: E402
                                           lens_agreement)
from workbench.residual.lens import lens_logits  # noqa: E402
from workbench.residual.run import head_of, residual_stack  # noqa: E402
from workbench.tokenizers import ByteTokenizer  # noqa: E402

GREEDY = Pipeline.preset("hf", temperature=0.0)
HF = ("llama", "gpt2", "gemma2")


def tiny_gpt(seed: int = 0, n_layer: int = 4, pos: str = "rope") -> TinyGPT:
    """A random 4-layer byte TinyGPT with weights large enough that the layers disagree."""
    torch.manual_seed(seed)
    tok = ByteTokenizer()
    m = TinyGPT(GPTConfig(vocab_size=tok.vocab_size, n_layer=n_layer, n_head=2, n_embd=32, block_size=64, pos=pos),
                tokenizer=tok, name=f"tiny{seed}").eval()
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.15)
    return m


@pytest.fixture(scope="module")
def tiny():
    return tiny_gpt()


def models(tiny):
    return [("tinygpt", tiny)] + [(f, F.loaded(f)) for f in HF]


IDS = torch.tensor([[5, 99, 17, 3, 250, 42, 42, 7, 120, 64, 9, 33, 201, 8, 77, 15, 2, 190, 11, 60]])


def ids_for(model):
    return IDS % min(int(model.config.vocab_size), 300)


def stepped(model, cache, ids, chunks):
    """Logits of ``ids`` fed through ``cache`` in pieces of the given sizes, concatenated over time."""
    out, s = [], 0
    for n in chunks:
        out.append(model.step(ids[:, s:s + n], cache).logits)
        s += n
    assert s == ids.size(1)
    return torch.cat(out, 1)


CHUNKS = [6, 1, 1, 3, 1, 1, 1, 1, 5]


@pytest.mark.parametrize("which", ["tinygpt", *HF])
def test_all_layers_is_the_model(tiny, which):
    """early_exit(model, L): the same logits as the model, in a forward pass and in cached steps."""
    model = dict(models(tiny))[which]
    ids = ids_for(model)
    L = layout_of(model).n_layer
    d = early_exit(model, L)
    want = model.forward(ids).logits.float()
    torch.testing.assert_close(d.forward(ids).logits, want, atol=1e-5, rtol=1e-5)
    got = stepped(d, d.new_cache(1, 32), ids, CHUNKS)
    torch.testing.assert_close(got, stepped(model, model.new_cache(1, 32), ids, CHUNKS), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("which", ["tinygpt", *HF])
def test_exit_logits_are_the_logit_lens(tiny, which):
    """early_exit(model, k) = the model's own head on the residual stream after k blocks (a plain residual_stack),
    in a forward pass and step by step through the draft's cache; and it is not the model's output."""
    model = dict(models(tiny))[which]
    ids = ids_for(model)
    rs = residual_stack(model, ids)
    head = head_of(model)
    L = layout_of(model).n_layer
    for k in range(1, L):
        d = early_exit(model, k)
        want = head(rs.resid[k])
        torch.testing.assert_close(d.forward(ids).logits, want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(stepped(d, d.new_cache(1, 32), ids, CHUNKS), want, atol=1e-4, rtol=1e-4)
        assert (want - rs.logits).abs().max() > 1e-2  # the lens at k really differs from the model


@pytest.mark.parametrize("which", ["tinygpt", *HF])
def test_later_blocks_never_run(tiny, which):
    """A draft call runs blocks 0..k-1 once each and never blocks k..L-1 (forward pass and cached step)."""
    model = dict(models(tiny))[which]
    lay = layout_of(model)
    calls = [0] * lay.n_layer
    handles = [b.register_forward_hook(lambda m, a, o, i=i: calls.__setitem__(i, calls[i] + 1))
               for i, b in enumerate(lay.blocks)]
    try:
        d = early_exit(model, 1)
        d.forward(ids_for(model))
        c = d.new_cache(1, 32)
        d.step(ids_for(model)[:, :4], c)
        d.step(ids_for(model)[:, 4:5], c)
        assert calls == [3] + [0] * (lay.n_layer - 1)
        model.forward(ids_for(model))  # the hook above is gone: the full model runs every block again
        assert calls == [4] + [1] * (lay.n_layer - 1)
    finally:
        for h in handles:
            h.remove()


@pytest.mark.parametrize("which", ["tinygpt", *HF])
@pytest.mark.parametrize("gamma", [1, 3])
def test_greedy_self_speculative_equals_greedy(tiny, which, gamma):
    """speculative_decode(model, early_exit(model, k)) at temperature 0 gives the target's greedy tokens; the
    draft disagrees sometimes (k < L), so rejection and the caches' crop were exercised."""
    model = dict(models(tiny))[which]
    prompt = ids_for(model)[0, :5].tolist()
    want = greedy(model, prompt, 24).tokens
    L = layout_of(model).n_layer
    for k in range(1, L + 1):
        got = speculative_decode(model, early_exit(model, k), prompt, 24, gamma=gamma, pipeline=GREEDY)
        assert got.tokens == want, k
        if k == L:
            assert got.stats.accepted == got.stats.drafted  # the whole model agrees with itself
    lowest = speculative_decode(model, early_exit(model, 1), prompt, 24, gamma=gamma, pipeline=GREEDY)
    assert lowest.stats.accepted < lowest.stats.drafted


def test_weights_are_shared_not_copied():
    """The draft's parameters are the target's tensors (same storage), the later blocks' excluded; an in-place
    change to the target's weights shows in the draft's next call (forward and NumPy step alike)."""
    model = tiny_gpt(3)
    d = early_exit(model, 2)
    ptrs = {p.data_ptr() for p in model.parameters()}
    mine = list(d.parameters())
    assert mine and all(p.data_ptr() in ptrs for p in mine)
    later = {p.data_ptr() for b in model.blocks[2:] for p in b.parameters()}
    assert not later & {p.data_ptr() for p in mine}
    assert sum(p.numel() for p in mine) < sum(p.numel() for p in model.parameters())
    ids = IDS[:, :8]
    before = d.forward(ids).logits
    c = d.new_cache(1, 16)
    d.step(ids[:, :7], c)
    d.step(ids[:, 7:8], c)  # builds the NumPy step's truncated copy of the target's arrays
    with torch.no_grad():
        model.blocks[1].mlp.proj.weight.mul_(3.0)
    after = d.forward(ids).logits
    assert (after - before).abs().max() > 1e-2
    torch.testing.assert_close(after, head_of(model)(residual_stack(model, ids).resid[2]), atol=1e-5, rtol=1e-5)
    c = d.new_cache(1, 16)
    d.step(ids[:, :7], c)
    torch.testing.assert_close(d.step(ids[:, 7:8], c).logits, after[:, 7:8], atol=1e-4, rtol=1e-4)


def test_tinygpt_decoding_step_takes_the_numpy_path_and_matches_torch(tiny):
    """A one-token cached step of the logit-lens draft runs the target's NumPy step truncated to k layers (sharing
    its arrays) and equals the torch route (forced by a hook) to float32 rounding."""
    d = early_exit(tiny, 2)
    ids = IDS[:, :10]
    c = d.new_cache(1, 16)
    d.step(ids[:, :9], c)
    ran = []
    h = tiny.blocks[0].register_forward_pre_hook(lambda m, a: ran.append(1))
    try:
        torch_route = d.step(ids[:, 9:10], c).logits  # a hook forces the torch route
    finally:
        h.remove()
    assert ran
    c.crop(9)
    d.step(ids[:, 9:10], c)  # builds the truncated NumPy step
    part = d._np_part
    assert part is not None and len(part.layers) == 2 and part.layers[0] is tiny._numpy_step.layers[0]
    calls = []

    def spy(x, cache):
        calls.append(1)
        return part(x, cache)

    d._np_part = spy
    c.crop(9)
    numpy_route = d.step(ids[:, 9:10], c).logits
    assert calls == [1] and c.length == 10
    torch.testing.assert_close(numpy_route, torch_route, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("which", ["tinygpt", "llama"])
def test_cache_holds_only_the_layers_that_run_and_keeps_crop_and_reorder(tiny, which):
    model = dict(models(tiny))[which]
    ids = ids_for(model)[:, :12]
    L = layout_of(model).n_layer
    d = early_exit(model, 1)
    c = d.new_cache(2, 16)
    assert type(c) is type(model.new_cache(1, 4))
    two = torch.cat([ids, ids.flip(1)])
    d.step(two[:, :8], c)
    assert c.length == 8
    full = model.new_cache(2, 16)
    model.step(two[:, :8], full)
    assert kv_cache_bytes(c) * L == kv_cache_bytes(full)
    if isinstance(c, KVCache):
        assert c.k.size(0) == 1
    else:
        assert len(c.pkv.layers) == 1
    # crop: rolling back and re-feeding gives the same logits as a straight run
    straight = d.step(two[:, 8:12], c).logits
    c.crop(9)
    assert c.length == 9
    torch.testing.assert_close(d.step(two[:, 9:12], c).logits, straight[:, 1:], atol=1e-5, rtol=1e-5)
    # reorder: swap the two rows, continue, compare with the forward pass of the swapped sequences
    c.crop(8)
    c.reorder(torch.tensor([1, 0]))
    swapped = two.flip(0)
    got = d.step(swapped[:, 8:12], c).logits
    torch.testing.assert_close(got, d.forward(swapped).logits[:, 8:12], atol=1e-4, rtol=1e-4)


def random_tuned_lens(model, seed: int = 1) -> TunedLens:
    """A tuned lens for ``model`` with random translators (a trained one is close to the identity)."""
    lens = TunedLens.for_model(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        lens.A.copy_(torch.randn(lens.A.shape, generator=g) * 0.3)
        lens.b.copy_(torch.randn(lens.b.shape, generator=g))
    return lens


@pytest.mark.parametrize("which", ["tinygpt", "llama"])
def test_a_tuned_lens_translates_before_the_head(tiny, which):
    """With a tuned lens the draft's logits are lens_logits (the tuned-lens module's own stack computation) at
    boundary k, in a forward pass and cached steps; greedy self-speculative decoding still equals greedy."""
    model = dict(models(tiny))[which]
    lens = random_tuned_lens(model)
    ids = ids_for(model)[:, :10]
    want_all = lens_logits(model, residual_stack(model, ids).resid, lens)
    L = layout_of(model).n_layer
    for k in range(1, L + 1):
        d = early_exit(model, k, lens=lens)
        torch.testing.assert_close(d.forward(ids).logits, want_all[k], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(stepped(d, d.new_cache(1, 16), ids, [4, 1, 1, 1, 3]), want_all[k],
                                   atol=1e-4, rtol=1e-4)
        assert any(p is lens.A for p in d.parameters())
    d = early_exit(model, 1, lens=lens)
    assert (d.forward(ids).logits - early_exit(model, 1).forward(ids).logits).abs().max() > 1e-2  # not the logit lens
    prompt = ids[0, :3].tolist()
    assert speculative_decode(model, d, prompt, 12, gamma=2, pipeline=GREEDY).tokens == greedy(model, prompt, 12).tokens


def test_bad_input_gets_specific_errors(tiny):
    for bad in (0, 5, -1):
        with pytest.raises(OutOfRangeError, match="1..4"):
            early_exit(tiny, bad)
    for bad in (True, 1.5, "2"):
        with pytest.raises(ResidualError, match="int"):
            early_exit(tiny, bad)
    with pytest.raises(ResidualError, match="TunedLens"):
        early_exit(tiny, 1, lens="not a lens")
    with pytest.raises(ResidualError, match="no tuned lens is shipped"):
        early_exit(tiny, 1, lens="tuned")
    with pytest.raises(LensMismatchError, match="another model"):
        early_exit(tiny, 1, lens=TunedLens.for_model(tiny_gpt(7)))
    with pytest.raises(ResidualError, match="capture"):
        early_exit(tiny, 1).forward(IDS, capture=True)
    with pytest.raises(ResidualError, match="exceed the context"):
        exit_report(tiny, IDS, prompt_tokens=40, max_new_tokens=30)
    with pytest.raises(OutOfRangeError, match="out of range"):
        lens_agreement(tiny, [1, 2, 999], [1])


def test_exit_report(tiny):
    """Agreement equals an independent count over the text (two context windows); speculative rows are greedy-equal,
    the full-model row accepts everything; the draft's cache is k / L of the target's."""
    torch.manual_seed(5)
    text = torch.randint(0, 256, (1, 100))
    r = exit_report(tiny, text, max_new_tokens=12, gamma=3, prompt_tokens=20, n_prompts=2, repeats=1)
    assert [row.layer for row in r.rows] == [1, 2, 3, 4] and r.text_tokens == 100
    head = head_of(tiny)
    for row in r.rows:
        hits = 0
        for s in (0, 64):
            rs = residual_stack(tiny, text[:, s:s + 64])
            hits += int((head(rs.resid[row.layer]).argmax(-1) == rs.logits.argmax(-1)).sum())
        assert row.agreement == pytest.approx(hits / 100)
        assert row.same_as_greedy
        assert row.cache_bytes * 4 == r.target_cache_bytes * row.layer
        assert row.wall_ratio > 0 and row.draft_cost > 0 and row.step_ratio > 0
    assert r.rows[-1].agreement == 1.0 and r.rows[-1].acceptance == 1.0
    assert r.rows[-1].tokens_per_call == pytest.approx(2 * 12 / (2 * 3))  # 12 tokens in rounds of 4, 4, 4
    assert r.rows[0].acceptance < 1.0
    assert "exit" in r.table() and "1/4" in r.table()


def test_the_draft_is_a_model_of_the_interface(tiny):
    from workbench.models.interface import CausalLM

    d = early_exit(tiny, 2)
    assert isinstance(d, EarlyExitModel) and isinstance(d, CausalLM)
    assert d.config is tiny.config and d.tokenizer is tiny.tokenizer and d.layer == 2
    assert "exit 2/4" in d.name


@pytest.mark.parametrize("family", [f for f in F.FAMILIES if f not in HF])
def test_the_other_hf_families(family):
    """The same checks, briefly, on the remaining families: the exit at 1 is the logit lens (forward and cached
    steps), the exit at L is the model, and greedy self-speculative decoding from exit 1 equals greedy decoding."""
    model = F.loaded(family)
    ids = ids_for(model)
    rs = residual_stack(model, ids)
    d = early_exit(model, 1)
    want = head_of(model)(rs.resid[1])
    torch.testing.assert_close(d.forward(ids).logits, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(stepped(d, d.new_cache(1, 32), ids, CHUNKS), want, atol=1e-4, rtol=1e-4)
    L = layout_of(model).n_layer
    torch.testing.assert_close(early_exit(model, L).forward(ids).logits, model.forward(ids).logits.float(),
                               atol=1e-5, rtol=1e-5)
    prompt = ids[0, :3].tolist()
    got = speculative_decode(model, d, prompt, 20, gamma=3, pipeline=GREEDY)
    assert got.tokens == greedy(model, prompt, 20).tokens


def test_the_exit_hook_leaves_other_threads_alone():
    """While a draft call holds its hook on block k - 1, the full target run in another thread is not cut short."""
    import threading

    model = tiny_gpt(4)
    ids = IDS[:, :8]
    want = model.forward(ids).logits.detach()
    seen = {}

    def run_target_elsewhere(module, args):
        if threading.current_thread() is threading.main_thread() and "started" not in seen:
            seen["started"] = True
            t = threading.Thread(target=lambda: seen.__setitem__("logits", model.forward(ids).logits.detach()))
            t.start()
            t.join()

    draft = early_exit(model, 2)  # built first: finding the head runs the model once
    h = model.blocks[0].register_forward_pre_hook(run_target_elsewhere)
    try:
        got = draft.forward(ids).logits
    finally:
        h.remove()
    torch.testing.assert_close(seen["logits"], want)
    torch.testing.assert_close(got, head_of(model)(residual_stack(model, ids).resid[2]), atol=1e-5, rtol=1e-5)
