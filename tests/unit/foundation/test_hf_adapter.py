"""from_hf on a tiny randomly initialised GPT-2 written to disk by the test and loaded back, fully offline."""
import pytest
import torch

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from workbench.models import CausalLM, ModelError, from_hf  # noqa: E402


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    d = tmp_path_factory.mktemp("tiny-gpt2")
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    raw.train_from_iterator(["the cat sat on the mat", "def f(x): return x + 1", "héllo wörld 123"] * 20, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    tok.save_pretrained(d)
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=len(tok), n_positions=64,
                     bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    GPT2LMHeadModel(cfg).save_pretrained(d)
    return d


def reference(d):
    from transformers import GPT2LMHeadModel

    return GPT2LMHeadModel.from_pretrained(d, attn_implementation="eager").eval()


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_capture_equals_hf_output_attentions(gpt2_dir, impl):
    m = from_hf(gpt2_dir, attn_implementation=impl)
    assert isinstance(m, CausalLM) and m.attn_implementation == impl
    ids = torch.randint(0, m.config.vocab_size, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = reference(gpt2_dir)(ids, output_attentions=True, output_hidden_states=True)
    out = m.forward(ids, capture=True)
    assert out.attentions.shape == (2, 2, 2, 20, 20)
    torch.testing.assert_close(out.attentions, torch.stack(ref.attentions), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.logits, ref.logits, atol=1e-5, rtol=0)
    assert out.residuals.shape == (3, 2, 20, 32)
    assert m.attn_implementation == impl  # switched back after capturing


def test_cached_steps_match_full_forward(gpt2_dir):
    m = from_hf(gpt2_dir, attn_implementation="sdpa")
    ids = torch.randint(0, m.config.vocab_size, (1, 16))
    full = m.forward(ids).logits
    cache = m.new_cache(1)
    parts = [m.step(ids[:, :6], cache).logits] + [m.step(ids[:, t : t + 1], cache).logits for t in range(6, 16)]
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)
    assert cache.length == 16
    cache.crop(10)
    torch.testing.assert_close(m.step(ids[:, 10:16], cache).logits, full[:, 10:16], atol=1e-5, rtol=1e-5)


def test_tokenizer_view(gpt2_dir):
    m = from_hf(gpt2_dir)
    tok = m.tokenizer
    text = "the cat sat on héllo 123"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert b"".join(tok.token_bytes(i) for i in ids) == text.encode("utf-8")
    assert "<|endoftext|>" in tok.special_tokens and tok.vocab_size == m.config.vocab_size


def test_in_memory_model_and_errors(gpt2_dir):
    hf = reference(gpt2_dir)
    m = from_hf(hf)
    assert m.tokenizer is None and m.config.n_layer == 2 and m.config.block_size == 64
    with pytest.raises(ModelError, match="longer than the context of 64"):
        m.forward(torch.zeros(1, 65, dtype=torch.long))
    with pytest.raises(ModelError, match="out of range"):
        m.forward(torch.tensor([[m.config.vocab_size]]))
    with pytest.raises(ModelError, match="cannot load"):
        from_hf(gpt2_dir / "does-not-exist")
