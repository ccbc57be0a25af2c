"""The routes that use the kernels automatically, run end to end with the real kernels on the CPU.

On a GPU machine TinyGPT's inference attention, the decoding lab's draws, speculative verification and the
attention probe's head probabilities go through the CUDA kernels. With the ``emulator`` back-end the same
routes send CPU tensors to the same kernels (compiled for the CPU), so the wiring and the kernels are
checked together here: each result must equal what the reference route gives.
"""
import pytest
import torch

from tests.factories import tiny_gpt
from workbench import kernels
from workbench.attention import AttentionProbe, lambda_mask, sliding_window
from workbench.decoding import Pipeline, sample, speculative_decode
from workbench.kernels import cupy_ops, emulator
from workbench.tokenizers import ByteTokenizer

_ok, _why = emulator.available()
pytestmark = pytest.mark.skipif(not _ok, reason=f"CPU emulator unavailable: {_why}")
HF = Pipeline.preset("hf", temperature=0.9, top_k=40, top_p=0.9, min_p=0.02)
PROMPT = list(b"the cat ")
TEXT = "the cat sat on the mat; the cat sat on the hat."


def model(seed, pos="learned", n_layer=2):
    """Head size 16, one the kernels take."""
    return tiny_gpt(ByteTokenizer(), seed=seed, n_layer=n_layer, n_head=2, n_embd=32, block_size=64, pos=pos,
                    weight_scale=3.0)


@pytest.fixture
def launches(restore_backend, monkeypatch):
    """Count the kernel launches by kernel name (the emulator back-end is set for the test)."""
    seen = {}
    real = cupy_ops._function

    def counting(file, kernel, *a):
        fn = real(file, kernel, *a)

        def call(*args, **kw):
            seen[kernel] = seen.get(kernel, 0) + 1
            return fn(*args, **kw)
        return call

    monkeypatch.setattr(cupy_ops, "_function", counting)
    yield seen


def test_tinygpt_attention_runs_the_kernel(launches):
    m = model(0)
    ids = torch.tensor([list(TEXT.encode())])
    with torch.no_grad():
        want = m(ids).logits
        kernels.set_backend("emulator")
        got = m(ids).logits
    assert launches == {"wb_attn_fwd_f32_d16": 2}           # one launch per layer
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_cached_decoding_uses_both_kernels(launches):
    """Sampling with a KV cache: the attention kernel at every step (the NumPy step stands aside) and the
    sampling kernel for every draw; the tokens are those of the kernels' reference route."""
    m = model(1)
    want = sample(m, PROMPT, 10, HF, seed=7, draw="kernel")       # reference back-end: the kernels' reference
    kernels.set_backend("emulator")
    got = sample(m, PROMPT, 10, HF, seed=7)                        # draw="auto" picks the kernel
    assert got.tokens == want.tokens
    assert launches["wb_sample_rows"] == 10
    assert launches["wb_attn_fwd_f32_d16"] == 2 * 10               # prefill + 9 cached steps, 2 layers
    assert got.tokens != sample(m, PROMPT, 10, HF, seed=7, draw="noise").tokens   # it really is another draw


def test_speculative_decoding_uses_the_verification_kernel(launches):
    target, draft = model(2), model(3, n_layer=1)
    want = speculative_decode(target, draft, PROMPT, 12, gamma=3, pipeline=HF, seed=4, draw="kernel")
    kernels.set_backend("emulator")
    got = speculative_decode(target, draft, PROMPT, 12, gamma=3, pipeline=HF, seed=4)
    assert got.tokens == want.tokens
    assert (got.stats.accepted, got.stats.target_calls) == (want.stats.accepted, want.stats.target_calls)
    assert launches["wb_verify_speculative"] == got.stats.target_calls
    assert launches["wb_sample_rows"] == got.stats.drafted


@pytest.mark.parametrize("policy", [None, sliding_window(6), lambda_mask(2, 6)], ids=str)
def test_attention_probe_takes_probabilities_from_the_kernel(launches, monkeypatch, policy):
    m = model(4, pos="rope")
    want = AttentionProbe(m, TEXT, policy=policy).probs(1, [1, 0], window=(5, 30))
    kernels.set_backend("emulator")
    probe = AttentionProbe(m, TEXT, policy=policy)
    before = dict(launches)
    asked = []
    real = kernels.attention
    monkeypatch.setattr(kernels, "attention", lambda *a, **k: asked.append(k) or real(*a, **k))
    got = probe.probs(1, [1, 0], window=(5, 30))
    assert [k.get("return_probs_heads") for k in asked] == [range(2)]     # the click asked the kernel
    assert launches["wb_attn_fwd_f32_d16"] == before.get("wb_attn_fwd_f32_d16", 0) + 1
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def test_emulator_backend_is_reported_and_guards_devices(restore_backend):
    info = kernels.set_backend("emulator")
    assert (info.name, info.device) == ("emulator", "CPU (emulated)")
    assert kernels.kernels_run_for(False) and not kernels.kernels_run_for(True)
    q = torch.randn(1, 1, 4, 16)
    assert kernels.attention(q, q, q).shape == q.shape
    if torch.cuda.is_available():   # pragma: no cover - GPU machines
        with pytest.raises(kernels.KernelInputError, match="emulator back-end runs the kernels on CPU tensors"):
            kernels.attention(q.cuda(), q.cuda(), q.cuda())
