"""RecurrentLM behind the model interface: decoding strategies (greedy, beam, prompt lookup, speculative) against a
plain loop of full forwards, the Playground and the DecodingLab opened on it unchanged, training on the docs
corpus, checkpoints, and the attention tools saying why they do not apply."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from workbench.models import (CheckpointError, RecurrentConfig, RecurrentLM, evaluate, load, save, train)
from workbench.tokenizers import ByteTokenizer


@pytest.fixture(autouse=True)
def one_thread():
    """Thousands of tiny ops: a second intra-op thread on two busy shared cores only waits."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def byte_recurrent(seed=0, n_layer=2, n_embd=32, std=0.3, name="rec", **kw) -> RecurrentLM:
    """A byte-level model with weights large enough for peaked, varied next-token distributions."""
    torch.manual_seed(seed)
    m = RecurrentLM(RecurrentConfig(vocab_size=257, n_layer=n_layer, n_head=2, n_embd=n_embd, d_state=16,
                                    block_size=128, **kw), ByteTokenizer(), name=name).eval()
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() > 1:
                p.normal_(0.0, std)
    return m


@torch.no_grad()
def greedy_by_full_forwards(model, prompt: list[int], n: int) -> list[int]:
    """The reference: recompute the whole sequence for every new token, no cache."""
    seq = list(prompt)
    for _ in range(n):
        seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
    return seq[len(prompt):]


PROMPT = list(b"def f(x): return x + ")


def test_greedy_and_prompt_lookup_match_full_forwards():
    from workbench.decoding import greedy, prompt_lookup

    m = byte_recurrent(seed=1)
    want = greedy_by_full_forwards(m, PROMPT, 24)
    assert len(set(want)) > 3  # a varied continuation, so that agreement means something
    assert greedy(m, PROMPT, 24).tokens == want
    # prompt lookup drafts from the prompt and crops the cache on every rejection
    assert prompt_lookup(m, PROMPT + PROMPT, 24, num_pred=6).tokens == greedy_by_full_forwards(m, PROMPT + PROMPT, 24)


def test_greedy_speculative_decoding_equals_greedy_of_the_target():
    """Speculative decoding crops both caches back over rejected drafts: with temperature 0 its output is the
    target's greedy output exactly, whatever the draft (here a smaller recurrent model)."""
    from workbench.decoding import speculative_decode

    target, draft = byte_recurrent(seed=2), byte_recurrent(seed=3, n_layer=1, n_embd=16)
    for gamma in (1, 4, 8):
        res = speculative_decode(target, draft, PROMPT, 30, gamma=gamma, pipeline={"temperature": 0})
        assert res.tokens == greedy_by_full_forwards(target, PROMPT, 30)
    assert any(not all(r.accepted) for r in res.rounds)  # some drafts were rejected and cropped


def test_speculative_with_a_tinygpt_draft():
    from tests.factories import tiny_gpt
    from workbench.decoding import speculative_decode

    target = byte_recurrent(seed=4)
    draft = tiny_gpt(ByteTokenizer(), seed=5, n_layer=1, n_head=2, n_embd=16, block_size=64, pos="rope",
                     weight_std=0.15)
    res = speculative_decode(target, draft, PROMPT, 20, gamma=3, pipeline={"temperature": 0})
    assert res.tokens == greedy_by_full_forwards(target, PROMPT, 20)


def test_beam_search_reorders_the_cache():
    """Beam search with one beam is greedy; with several, the best hypothesis's score is its summed log-prob,
    recomputed here by a full forward."""
    from workbench.decoding import beam_search

    m = byte_recurrent(seed=6)
    one = beam_search(m, PROMPT, num_beams=1, max_new_tokens=10, length_penalty=0.0)
    assert one.best.tokens == greedy_by_full_forwards(m, PROMPT, 10)
    res = beam_search(m, PROMPT, num_beams=4, max_new_tokens=10, length_penalty=0.0)
    best = res.best.tokens
    with torch.no_grad():
        logp = F.log_softmax(m(torch.tensor([PROMPT + best])).logits[0, len(PROMPT) - 1:-1], -1)
    assert math.isclose(float(logp.gather(1, torch.tensor(best)[:, None]).sum()), res.best.score, abs_tol=1e-4)


def test_playground_opens_and_samples_unchanged():
    pytest.importorskip("ipywidgets")
    from widgets.playground import Playground

    m = byte_recurrent(seed=7)
    pg = Playground(m, prompt="for x in", k=5, debounce=0)
    assert "error" not in pg.info.value.lower() and len(pg.bars) == 5
    with torch.no_grad():
        probs = F.softmax(m(torch.tensor([list(b"for x in")])).logits[0, -1] / 0.8, -1)
    assert math.isclose(pg.bars[0][1], float(probs.max()), rel_tol=1e-4)
    pg.sample()
    assert pg.last_continuation is not None and len(pg.last_continuation.ids) == pg.max_new.value


def test_decoding_lab_runs_every_strategy_unchanged():
    pytest.importorskip("ipywidgets")
    from widgets.decoding_lab import DecodingLab
    from workbench.decoding.compare import KINDS

    lab = DecodingLab(byte_recurrent(seed=8), draft=byte_recurrent(seed=9, n_layer=1, n_embd=16),
                      prompt="while True:", max_new_tokens=12)
    for kind in KINDS:
        lab.configure(strategy=kind)
        assert lab.result is not None, (kind, lab.info.value)
        assert "error" not in lab.info.value.lower(), (kind, lab.info.value)


def test_training_a_few_hundred_steps_lowers_the_loss_on_the_docs_corpus():
    """200 steps on the embedded Python docs: validation loss far below the start (ln 257 = 5.55 nats) and below
    the byte unigram entropy of the validation text, which no model without context can beat."""
    from workbench.data.corpus import load_corpus, train_val_split

    ids = torch.tensor(list(load_corpus("python-docs").encode("utf-8")[:300_000]))
    tr, va = train_val_split(ids, 0.1)
    torch.manual_seed(0)
    m = RecurrentLM(RecurrentConfig(n_layer=2, n_head=2, n_embd=48, d_state=16, block_size=64))
    before = evaluate(m, va, max_tokens=8192)
    hist = train(m, tr, steps=200, batch_size=8, lr=5e-3, val_ids=va, eval_tokens=8192, eval_every=50,
                 progress=False)
    counts = torch.bincount(va[:8193], minlength=257).float()
    p = counts[counts > 0] / counts.sum()
    unigram = float(-(p * p.log()).sum())
    assert before > 5.0
    assert hist.final_val_loss < unigram - 0.4, (hist.val_loss, unigram)  # measured: 2.48 against 3.17
    assert hist.val_loss[-1] < hist.val_loss[0]


def test_checkpoint_round_trip(tmp_path):
    m = byte_recurrent(seed=10, name="rec-ckpt")
    save(m, tmp_path / "rec", meta={"note": "x"})
    back = load(tmp_path / "rec")
    assert type(back) is RecurrentLM and back.config == m.config and back.name == "rec-ckpt"
    assert back.meta == {"note": "x"} and back.tokenizer.vocab_size == 257
    assert back.lm_head.weight is back.wte.weight  # the tie survives
    ids = torch.randint(0, 257, (2, 50), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, m(ids).logits, rtol=0, atol=0)
    assert load(tmp_path / "rec", architecture=RecurrentLM).config == m.config


def test_loading_one_architecture_as_the_other_is_a_specific_error(tmp_path):
    from tests.factories import tiny_gpt
    from workbench.models import TinyGPT

    save(byte_recurrent(), tmp_path / "rec")
    save(tiny_gpt(n_layer=1, n_head=1, n_embd=8, block_size=8), tmp_path / "gpt")
    with pytest.raises(CheckpointError, match=r"holds a RecurrentLM checkpoint, not a TinyGPT"):
        load(tmp_path / "rec", architecture="TinyGPT")
    with pytest.raises(CheckpointError, match=r"holds a TinyGPT checkpoint, not a RecurrentLM"):
        load(tmp_path / "gpt", architecture=RecurrentLM)
    assert type(load(tmp_path / "gpt", architecture=TinyGPT)) is TinyGPT
    with pytest.raises(CheckpointError, match=r"unknown architecture 'Mamba'"):
        load(tmp_path / "rec", architecture="Mamba")
    # a config.json whose architecture field was edited to the other one: the config says what is wrong
    import json

    cfg_path = tmp_path / "rec" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "architecture": "TinyGPT"}))
    with pytest.raises(CheckpointError, match=r"bad TinyGPT config .*unknown GPTConfig fields \[.*'d_state'"):
        load(tmp_path / "rec")
    cfg_path.write_text(json.dumps({**cfg, "architecture": "LSTM"}))
    with pytest.raises(CheckpointError, match=r"names architecture 'LSTM'.*'RecurrentLM', 'TinyGPT'"):
        load(tmp_path / "rec")


def test_attention_tools_say_what_does_not_apply():
    from workbench.attention.capture import capture_attention
    from workbench.attention.errors import CaptureNotSupportedError
    from workbench.models.layout import LayoutError, layout_of

    m = byte_recurrent()
    with pytest.raises(CaptureNotSupportedError, match="rec has no attention to capture: it is a recurrent model"):
        capture_attention(m, "hello")
    with pytest.raises(LayoutError, match="RecurrentLM has no attention layout: .*fixed-size state"):
        layout_of(m)


def test_the_attention_lab_shows_why_it_does_not_apply():
    pytest.importorskip("ipywidgets")
    from widgets.attention_lab import AttentionLab

    lab = AttentionLab(byte_recurrent(), text="hello world")
    assert lab.data is None
    assert "no attention to capture" in lab.info.value and "capture_state" in lab.info.value
