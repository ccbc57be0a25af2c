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


# ---- bad input: each a specific error that says what to do; nothing is fetched -------------------------------

from tests import hf_families as F  # noqa: E402
from workbench.models import zoo  # noqa: E402
from workbench.models.hf_adapter import NotCausalLMError, TokenizerMismatchError  # noqa: E402


def test_hub_name_without_permission_fetches_nothing(monkeypatch, tmp_path):
    import huggingface_hub as hub

    monkeypatch.delenv(zoo.ENV_VAR, raising=False)
    for fn in ("model_info", "snapshot_download"):
        monkeypatch.setattr(hub, fn, lambda *a, **k: pytest.fail("the hub was called without permission"))
    with pytest.raises(zoo.DownloadNotAllowedError, match=r"downloads are off.*allow_download=True.*from_hf\("):
        from_hf("gpt2", cache_dir=tmp_path)
    with pytest.raises(zoo.DownloadNotAllowedError, match="no local folder"):
        from_hf("models/not-here", cache_dir=tmp_path)  # could be a folder or a hub name: says both


def test_folder_without_weights(tmp_path, gpt2_dir):
    with pytest.raises(zoo.MissingWeightsError, match="no model weights.*the folder is empty.*save_pretrained"):
        from_hf(tmp_path)
    (tmp_path / "config.json").write_bytes((gpt2_dir / "config.json").read_bytes())
    with pytest.raises(zoo.MissingWeightsError, match=r"no \*\.safetensors file \(found: config.json\)"):
        from_hf(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"never unpickled")
    with pytest.raises(zoo.UnsafeWeightsError, match="only pickle weights.*never unpickles"):
        from_hf(tmp_path)


def tiny_bert_and_t5():
    from transformers import BertConfig, BertForMaskedLM, T5Config, T5ForConditionalGeneration

    bert = BertForMaskedLM(BertConfig(vocab_size=F.MODEL_VOCAB, hidden_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, intermediate_size=64))
    t5 = T5ForConditionalGeneration(T5Config(vocab_size=F.MODEL_VOCAB, d_model=32, d_ff=64, d_kv=16, num_layers=1,
                                             num_heads=2))
    return {"bert": bert, "t5": t5}


@pytest.mark.parametrize("kind", ["bert", "t5"])
def test_a_model_that_is_not_causal(tmp_path, kind):
    model = tiny_bert_and_t5()[kind]
    reason = "bidirectional encoder" if kind == "bert" else "encoder-decoder"
    with pytest.raises(NotCausalLMError, match=f"not a decoder-only causal LM: .*{reason}.*needs a decoder-only"):
        from_hf(model)
    model.save_pretrained(tmp_path)
    with pytest.raises(NotCausalLMError, match=f"{reason}.*needs a decoder-only causal LM"):
        from_hf(tmp_path)
    from transformers import GPT2Config, GPT2Model

    with pytest.raises(NotCausalLMError, match="GPT2Model has no causal language-model head"):
        from_hf(GPT2Model(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50)))


def test_tokenizer_must_fit_the_model_but_a_padded_vocabulary_is_fine(tmp_path):
    from tokenizers import Tokenizer, models

    folder = F.save_family("gpt2", tmp_path, vocab_size=200)  # its saved tokenizer has 300 ids
    with pytest.raises(TokenizerMismatchError, match=r"tokenizer has 300 ids but the model's embedding has only 200"):
        from_hf(folder)
    big = Tokenizer(models.WordLevel({f"w{i}": i for i in range(50_000)}, unk_token="w0"))
    with pytest.raises(TokenizerMismatchError, match="50000 ids .* only 320 rows.*does not belong"):
        from_hf(F.build("llama"), tokenizer=big)
    m = F.loaded("llama")  # 300-id tokenizer, 320-row embedding: accepted
    assert m.tokenizer.vocab_size == F.TOKENIZER_VOCAB < m.config.vocab_size == F.MODEL_VOCAB


def test_bfloat16_weights_give_float32_logits_close_to_float32(tmp_path):
    folder = F.save_family("llama", tmp_path)
    m32, m16 = from_hf(folder), from_hf(folder, dtype="bfloat16")
    assert next(m32.parameters()).dtype == torch.float32 and next(m16.parameters()).dtype == torch.bfloat16
    ids = torch.tensor([m32.tokenizer.encode("def add(a, b):\n    return a + b")])
    l32, l16 = m32(ids).logits, m16(ids).logits
    assert l16.dtype == torch.float32 and l16.shape == l32.shape
    assert (l16 - l32).abs().max() < 0.05 * l32.abs().max()
    assert (l16.argmax(-1) == l32.argmax(-1)).float().mean() > 0.9
    out = m16.forward(ids, capture=True)
    assert out.attentions.dtype == out.residuals.dtype == torch.float32
    inst = from_hf(F.build("llama"), dtype=torch.bfloat16)
    assert next(inst.parameters()).dtype == torch.bfloat16
    with pytest.raises(ModelError, match=r"dtype 'int8' is not supported.*\['float32', 'bfloat16'"):
        from_hf(folder, dtype="int8")


def test_evaluate_gives_the_mean_next_token_loss_of_an_hf_model():
    from workbench.models import evaluate

    m = from_hf(F.build("gpt_neox"), F.hf_tokenizer())
    ids = torch.tensor(m.tokenizer.encode("for x in range(10):\n    print(x)\n" * 8))[:100]
    logits = m(ids[None, :-1]).logits[0]
    expected = torch.nn.functional.cross_entropy(logits, ids[1:]).item()
    assert evaluate(m, ids, block_size=len(ids) - 1) == pytest.approx(expected, rel=1e-5)
    assert not m.training


def test_train_fine_tunes_an_hf_model_and_evaluate_agrees_with_hf_loss():
    """workbench.models.train runs on a from_hf model (gradients only in training mode) and lowers its loss; the
    loss it reports is HF's own ``labels=`` loss on the same windows."""
    from tests import hf_families as F
    from workbench.models import evaluate, from_hf, train

    model = from_hf(F.build("llama"), F.hf_tokenizer())
    text = "def add(a, b):\n    return a + b\n" * 40
    ids = torch.tensor(model.tokenizer.encode(text))
    before = evaluate(model, ids, block_size=32)
    with torch.no_grad():
        x = ids[: 32 * (len(ids) // 32) + 1]
        n = (len(x) - 1) // 32
        hf_loss = model.hf(input_ids=x[: n * 32].view(n, 32), labels=x[: n * 32].view(n, 32)).loss
    # HF's labels= loss predicts tokens 1..31 of each window from the window itself; evaluate predicts 32 tokens
    # per window from the window and the next token: compare on the same targets
    with torch.no_grad():
        logits = model.forward(x[: n * 32].view(n, 32)).logits
        mine = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), x[: n * 32].view(n, 32)[:, 1:].flatten())
    assert float(mine) == pytest.approx(float(hf_loss), rel=1e-5)
    hist = train(model, ids, steps=30, batch_size=8, lr=3e-3, block_size=32, progress=False)
    after = evaluate(model, ids, block_size=32)
    assert after < before - 1.0, (before, after)
    assert not model.training and hist.records[-1].train_loss < hist.records[0].train_loss
    out = model.forward(ids[None, :8])
    assert not out.logits.requires_grad  # inference builds no graph
