"""The byte tokenizer's optional BOS, and training / evaluation windows that start with it."""
import torch

from tests.factories import tiny_gpt
from workbench.models.checkpoint import load, save
from workbench.models.training import evaluate, random_windows, train
from workbench.tokenizers import ByteTokenizer, tokenizer_from_dict


def test_plain_byte_tokenizer_is_unchanged():
    t = ByteTokenizer()
    assert t.bos_id is None and t.vocab_size == 257
    assert t.encode("hé") == [104, 195, 169]
    assert t.to_dict() == {"workbench_kind": "byte", "special_tokens": ["<|endoftext|>"]}


def test_bos_is_prepended_stands_for_no_text_and_is_shown_as_bos():
    t = ByteTokenizer(bos=True)
    assert (t.bos_id, t.vocab_size) == (257, 258)
    assert t.encode("hé<|endoftext|>") == [257, 104, 195, 169, 256]
    assert t.encode("") == [257]
    assert t.decode(t.encode("a b\n")) == "a b\n"
    assert t.token_str(257) == "<bos>" and t.token_bytes(257) == b""
    assert [(s.id, s.start, s.end) for s in t.spans("ab")] == [(257, 0, 0), (97, 0, 1), (98, 1, 2)]
    assert t.encode("<bos>")[1:] == list(b"<bos>")  # typed text never becomes the token
    assert ByteTokenizer(special_tokens=[], bos=True).encode("x") == [256, 120]


def test_bos_round_trips_through_to_dict_and_a_checkpoint(tmp_path):
    t = ByteTokenizer(bos=True)
    assert tokenizer_from_dict(t.to_dict()).encode("hi") == [257, 104, 105]
    m = tiny_gpt(t, seed=None, train=True, n_layer=1, n_head=1, n_embd=8, block_size=8)
    back = load(save(m, tmp_path / "m"))
    assert back.tokenizer.bos_id == 257 and back.tokenizer.encode("hi") == [257, 104, 105]


def test_random_windows_put_bos_at_position_0_and_keep_block_targets():
    data = torch.arange(100)
    g = torch.Generator().manual_seed(0)
    x, y = random_windows(data, 5, 8, g, bos=999)
    assert x.shape == y.shape == (5, 8)
    assert (x[:, 0] == 999).all() and (x[:, 1:] == y[:, :-1]).all()
    assert ((y[:, 1:] - y[:, :-1]) == 1).all() and (y < 100).all()
    # without bos: the old sampler, draw for draw
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    x1, _ = random_windows(data, 4, 8, g1)
    starts = torch.randint(0, 100 - 8, (4,), generator=g2)
    assert (x1[:, 0] == starts).all()


def test_evaluate_with_bos_scores_every_byte_of_each_window_after_a_bos():
    m = tiny_gpt(vocab_size=11, n_layer=1, n_head=1, n_embd=8, block_size=4)
    data = torch.arange(13) % 10
    got = evaluate(m, data, bos=10)
    y = data[:12].view(3, 4)
    x = torch.cat([torch.full((3, 1), 10), y[:, :-1]], 1)
    want = torch.nn.functional.cross_entropy(m(x).logits.flatten(0, 1), y.flatten()).item()
    assert abs(got - want) < 1e-6


def test_training_with_bos_windows_still_learns_the_data():
    m = tiny_gpt(train=True, vocab_size=11, n_layer=1, n_head=1, n_embd=16, block_size=8)
    data = torch.arange(400) % 9
    h = train(m, data, steps=150, batch_size=8, lr=1e-2, val_ids=data[:80], bos=10, progress=False)
    assert h.final_val_loss < 1.0


def test_fit_prompt_keeps_the_bos_first_when_it_cuts_from_the_left():
    from workbench.models.predict import fit_prompt
    from workbench.tokenizers import ByteTokenizer

    tok = ByteTokenizer(bos=True)
    m = tiny_gpt(tok, seed=None, train=True, n_layer=1, n_head=1, n_embd=8, block_size=16)
    text = "abcdefghijklmnopqrstuvwxyz"
    p = fit_prompt(m, text, reserve=4)
    assert p.ids[0] == tok.bos_id and len(p.ids) == 12
    assert tok.decode(p.ids) == text[-11:]  # the BOS plus the last 11 bytes
    assert p.dropped == len(text) + 1 - 12
    short = fit_prompt(m, "abc")
    assert short.ids == tok.encode("abc") and short.dropped == 0
    plain = fit_prompt(tiny_gpt(ByteTokenizer(), seed=None, train=True, vocab_size=257, n_layer=1, n_head=1, n_embd=8,
                                block_size=16), text, reserve=4)
    assert bytes(plain.ids) == text[-12:].encode()
