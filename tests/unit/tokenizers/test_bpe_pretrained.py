"""The shipped BPE-tokenised pair: docs-bpe reaches its recorded bits/byte, and both share one tokenizer
that the recipe rebuilds exactly."""
import pytest
import torch

from tests.factories import tiny_gpt
from workbench.models import load_pretrained
from workbench.models import make_pretrained as mp
from workbench.models.checkpoint import load, save
from workbench.models.pretrained import PRETRAINED_DIR, available
from workbench.tokenizers import BPETokenizer

pytestmark = pytest.mark.skipif("docs-bpe" not in available(), reason="docs-bpe is not shipped")


@pytest.fixture(scope="module")
def splits():
    return mp.bpe_splits()


def test_docs_bpe_reaches_recorded_bits_per_byte(splits):
    tok, _, val_ids = splits
    model = load_pretrained("docs-bpe")
    nats, bpb = mp.val_bits_per_byte(model, val_ids, model.tokenizer)
    recorded = model.meta["val_bpb"]
    assert bpb == pytest.approx(recorded, rel=0.02)
    # per byte, not per token: a BPE token is about 3 bytes, so nats/token / ln 2 is far larger
    assert nats / torch.log(torch.tensor(2.0)).item() > 2 * bpb


def test_pair_shares_the_recipe_tokenizer(splits):
    tok, _, _ = splits
    big, draft = load_pretrained("docs-bpe"), load_pretrained("docs-bpe-draft")
    assert isinstance(big.tokenizer, BPETokenizer)
    assert big.tokenizer.to_dict() == draft.tokenizer.to_dict() == tok.to_dict()
    assert big.config.vocab_size == draft.config.vocab_size == tok.vocab_size == mp.BPE_TOKENIZER["vocab_size"]
    text = "The for statement iterates over a sequence.\n    x = 12345"
    assert big.tokenizer.encode(text) == draft.tokenizer.encode(text) == tok.encode(text)


def test_val_bits_per_byte_equals_nats_over_ln2_for_bytes():
    """For a byte tokenizer every token is one byte, so the BPE formula must reduce to nats / ln 2."""
    byte_model = load_pretrained("docs-byte-draft")
    _, _, val_ids = mp.byte_splits()
    nats, bpb = mp.val_bits_per_byte(byte_model, val_ids[:20_000], byte_model.tokenizer)
    assert bpb == pytest.approx(mp.bits_per_byte(nats), rel=1e-9)


def test_checkpoint_with_bpe_round_trips(tmp_path, splits):
    tok = splits[0]

    m = tiny_gpt(tok, train=True, n_layer=1, n_head=2, n_embd=32, block_size=32)
    save(m, tmp_path / "ck")
    m2 = load(tmp_path / "ck")
    text = "Unicode café 東京 and numbers 1234"
    assert m2.tokenizer.encode(text) == tok.encode(text) and m2.tokenizer.decode(tok.encode(text)) == text
    x = torch.tensor([tok.encode(text)[:32]])
    assert torch.equal(m(x).logits, m2(x).logits)


def test_shipped_size_budget():
    total = sum(f.stat().st_size for f in PRETRAINED_DIR.rglob("*") if f.is_file())
    assert total < 6 * 2**20, f"shipped models take {total / 2**20:.1f} MB"
    meta = load_pretrained("docs-bpe").meta
    assert meta["tokenizer"]["vocab_size"] == 1024 and meta["command"].endswith("make_pretrained docs-bpe")
