"""The NumPy decoding step (TinyGPT's inference path for a few new tokens) against the full torch forward."""
import pytest
import torch

from tests.factories import tiny_gpt
from workbench.attention.variants import SinkCache
from workbench.models import ModelError
from workbench.models import numpy_step
from workbench.models.numpy_step import NumpyStep


def make(pos="rope", seed=0, **kw):
    # jitter: LayerNorm gains 1 and biases 0 would hide a wrong fold, so every parameter is made generic
    return tiny_gpt(seed=seed, vocab_size=61, n_layer=2, n_head=4, n_embd=32, block_size=48, pos=pos, jitter=0.3, **kw)


@pytest.fixture
def calls(monkeypatch):
    """Counts calls of the NumPy path, so each test knows which path ran."""
    n = [0]
    real = NumpyStep.__call__

    def counting(self, ids, cache):
        n[0] += 1
        return real(self, ids, cache)

    monkeypatch.setattr(NumpyStep, "__call__", counting)
    return n


def _cached(m, ids, chunks):
    """Logits of ``ids`` fed through a cache in the given chunk sizes."""
    cache = m.new_cache(ids.size(0))
    out, t = [], 0
    for c in chunks:
        out.append(m.step(ids[:, t : t + c], cache).logits)
        t += c
    assert cache.length == t == ids.size(1)
    return torch.cat(out, 1)


@pytest.mark.parametrize("kw", [dict(pos="rope"), dict(pos="learned"), dict(pos="rope", bias=False),
                                dict(pos="learned", tied=False), dict(pos="rope", attn_only=True),
                                dict(pos="rope", mlp_ratio=2)])
def test_numpy_step_equals_the_full_forward(kw, calls):
    m = make(**kw)
    ids = torch.randint(0, 61, (3, 40), generator=torch.Generator().manual_seed(1))
    full = m(ids).logits
    with torch.inference_mode():
        got = _cached(m, ids, [20] + [1] * 10 + [3, 5, 2])  # a torch prefill, then the NumPy path
    assert calls[0] == 13
    torch.testing.assert_close(got, full, atol=1e-5, rtol=1e-5)


def test_short_prompt_and_verification_chunks(calls):
    m = make()
    ids = torch.randint(0, 61, (1, 30), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        got = _cached(m, ids, [7, 16, 1, 6])  # all four calls fit the NumPy path
    assert calls[0] == 4
    torch.testing.assert_close(got, m(ids).logits, atol=1e-5, rtol=1e-5)


def test_crop_and_reorder_with_the_numpy_path(calls):
    m = make()
    ids = torch.randint(0, 61, (2, 20), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        cache = m.new_cache(2)
        m.step(ids[:, :12], cache)
        cache.crop(8)  # speculative decoding's roll-back
        out = m.step(ids[:, 8:14], cache).logits
        torch.testing.assert_close(out, m(ids[:, :14]).logits[:, 8:], atol=1e-5, rtol=1e-5)
        cache.reorder(torch.tensor([1, 1]))  # beam search keeps row 1 twice
        nxt = m.step(ids[1:2, 14:15].repeat(2, 1), cache).logits
    torch.testing.assert_close(nxt[0], m(ids[1:2, :15]).logits[0, -1:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(nxt[0], nxt[1])
    assert calls[0] == 3


def test_weight_changes_are_seen(calls):
    """The folded copies are rebuilt after an in-place update, a replaced parameter or a dtype change."""
    m = make()
    ids = torch.randint(0, 61, (1, 12), generator=torch.Generator().manual_seed(4))

    def check(tol):
        with torch.no_grad():
            torch.testing.assert_close(_cached(m, ids, [10, 1, 1]), m(ids).logits, atol=tol, rtol=tol)

    check(1e-5)
    with torch.no_grad():
        m.blocks[1].ln2.weight.mul_(-2.0)  # an optimizer step is an in-place update like this
    check(1e-5)
    m.blocks[0].attn.qkv.bias = torch.nn.Parameter(torch.randn(96))
    check(1e-5)
    m.double()
    check(1e-10)  # float64 end to end
    assert calls[0] == 12  # four checks of three NumPy calls each


def test_module_replacement_optimizer_steps_and_data_writes_are_seen(calls):
    m = make()
    ids = torch.randint(0, 61, (1, 12), generator=torch.Generator().manual_seed(5))

    def check():
        with torch.no_grad():
            torch.testing.assert_close(_cached(m, ids, [10, 1, 1]), m(ids).logits, atol=1e-5, rtol=1e-5)

    check()
    torch.manual_seed(1)
    m.blocks[1] = type(m.blocks[1])(m.config).eval()  # a replaced block keeps the old one's parameters alive
    check()
    m.lm_head = torch.nn.Linear(32, 61, bias=False).eval()
    check()
    opt = torch.optim.AdamW(m.parameters(), lr=0.1, fused=True)  # fused steps bump no version counter
    m(ids).logits.sum().backward()
    opt.step()
    check()
    with torch.no_grad():
        m.blocks[0].attn.proj.weight.data.mul_(3.0)  # invisible to every counter: the documented refresh
    m.refresh_fast_path()
    check()
    vec = torch.nn.utils.parameters_to_vector(m.blocks.parameters())
    torch.nn.utils.vector_to_parameters(vec * 1.5, m.blocks.parameters())  # swaps storages (p.data = ...)
    check()
    assert calls[0] == 18


def test_an_added_submodule_rebuilds_the_copies(monkeypatch):
    m = make()
    built = []
    init = NumpyStep.__init__
    monkeypatch.setattr(NumpyStep, "__init__", lambda self, model: built.append(1) or init(self, model))
    with torch.no_grad():
        _cached(m, torch.zeros(1, 4, dtype=torch.long), [2, 1, 1])
        assert len(built) == 1
        m.blocks[1].extra = torch.nn.Linear(2, 2).eval()  # a new key under an existing module
        _cached(m, torch.zeros(1, 4, dtype=torch.long), [2, 1, 1])
    assert len(built) == 2


def test_forward_hooks_and_training_submodules_take_the_torch_path(calls):
    """Head ablations and probes are forward hooks: they must run during cached decoding too."""
    m = make()
    ids = torch.randint(0, 61, (1, 12), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        plain = _cached(m, ids, [10, 1, 1])
        handle = m.blocks[0].attn.proj.register_forward_pre_hook(lambda mod, args: (args[0] * 0,))
        ablated = _cached(m, ids, [10, 1, 1])
        torch.testing.assert_close(ablated, m(ids).logits, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(ablated, plain, atol=1e-3)
        handle.remove()
        m.blocks[1].mlp.train()
        _cached(m, ids, [10, 1, 1])
        m.blocks[1].mlp.eval()
        torch.testing.assert_close(_cached(m, ids, [10, 1, 1]), plain, atol=1e-6, rtol=1e-6)
    assert calls[0] == 6  # the first and the last run; never with the hook or the training module


def test_torch_path_when_the_numpy_path_does_not_apply(calls):
    ids = torch.randint(0, 61, (1, 12))
    m = make()
    cache = m.new_cache(1)
    m.step(ids[:, :10], cache)
    m.step(ids[:, 10:11], cache)  # gradients enabled: torch, so training code can backpropagate
    assert calls[0] == 0
    with torch.no_grad():
        m.step(ids[:, 11:12], cache, capture=True)  # capture needs the explicit attention
        alibi = make("alibi")
        alibi.step(ids[:, :2], alibi.new_cache(1))
        sink = SinkCache(m, 2, 4)
        for t in range(8):
            m.step(ids[:, t : t + 1], sink)  # a cache policy that evicts
        m.train()
        m.step(ids[:, :2], m.new_cache(1))
    assert calls[0] == 0


def test_full_cache_error_from_the_numpy_path():
    m = make()
    with torch.no_grad():
        cache = m.new_cache(1, max_len=6)
        m.step(torch.zeros(1, 5, dtype=torch.long), cache)
        with pytest.raises(ModelError, match="cache is full: 5 cached \\+ 2 new tokens > max_len 6"):
            m.step(torch.zeros(1, 2, dtype=torch.long), cache)
    assert cache.length == 5  # nothing half-written is counted


def test_longer_inputs_use_torch(calls):
    m = make()
    with torch.no_grad():
        m.step(torch.zeros(1, numpy_step.MAX_NEW_TOKENS + 1, dtype=torch.long), m.new_cache(1))
    assert calls[0] == 0


@pytest.mark.parametrize("chunk", [1, 5, 16, 48, 64])
@pytest.mark.parametrize("kw", [dict(pos="rope"), dict(pos="learned"), dict(pos="rope", attn_only=True)])
def test_chunked_cache_steps_equal_the_full_forward(kw, chunk, calls):
    # every position of a chunk, chunk boundaries, a length that is not a whole number of chunks (42 % 5)
    m = make(**kw)
    ids = torch.randint(0, 61, (3, 42), generator=torch.Generator().manual_seed(3))
    full = m(ids).logits
    c = m.config
    cache = numpy_step.ChunkedKVCache(c.n_layer, 3, c.n_head, c.head_dim, 42, chunk=chunk)
    with torch.inference_mode():
        got = torch.cat([m.step(ids[:, t : t + 1], cache).logits for t in range(42)], 1)
    assert calls[0] == 42 and cache.length == 42
    torch.testing.assert_close(got, full, atol=1e-5, rtol=1e-5)
    with pytest.raises(ModelError, match="KV cache is full"):
        with torch.inference_mode():
            m.step(ids[:, :1], cache)


def test_new_step_cache_is_chunked_only_where_the_numpy_path_runs():
    m = make()
    with torch.inference_mode():
        assert isinstance(m.new_step_cache(2, 10), numpy_step.ChunkedKVCache)
        m.blocks[0].register_forward_hook(lambda *a: None)  # hooks must run: the torch path and its cache
        cache = m.new_step_cache(2, 10)
        assert type(cache).__name__ == "KVCache"
        m.step(torch.zeros((2, 1), dtype=torch.long), cache)


def test_chunked_cache_refuses_what_only_torch_can_do():
    m = make()
    c = m.config
    cache = numpy_step.ChunkedKVCache(c.n_layer, 1, c.n_head, c.head_dim, 10)
    with torch.inference_mode():
        with pytest.raises(ModelError, match="ChunkedKVCache runs only on the NumPy step"):
            m.step(torch.zeros((1, 2), dtype=torch.long), cache)  # two new tokens
        with pytest.raises(ModelError, match="ChunkedKVCache runs only on the NumPy step"):
            m.step(torch.zeros((1, 1), dtype=torch.long), cache, capture=True)
    with pytest.raises(ModelError, match="ChunkedKVCache runs only on the NumPy step"):
        m.step(torch.zeros((1, 1), dtype=torch.long), cache)  # gradients on
    assert cache.length == 0  # nothing written by a refused call


def test_step_fn_is_the_step_without_its_checks(calls):
    m = make()
    ids = torch.randint(0, 61, (3, 20), generator=torch.Generator().manual_seed(4))
    full = m(ids).logits
    with torch.inference_mode():
        cache = m.new_step_cache(3, 20)
        fn = m.step_fn(cache)
        got = torch.stack([torch.from_numpy(fn(ids[:, t : t + 1].numpy()).copy()) for t in range(20)], 1)
    torch.testing.assert_close(got, full, atol=1e-5, rtol=1e-5)
    assert calls[0] == 20 and cache.length == 20
    m.blocks[0].register_forward_hook(lambda *a: None)  # hooks must run: no loop step, step() takes the torch path
    assert m.step_fn(m.new_cache(3, 20)) is None
