import re
import time
from pathlib import Path

import pytest
import torch

from workbench.models import available, load_pretrained
from workbench.models.make_pretrained import bits_per_byte, byte_splits
from workbench.models.training import evaluate

README = Path(__file__).resolve().parents[3] / "README.md"


def readme_bpb(name: str) -> float:
    m = re.search(rf"\|\s*`{re.escape(name)}`\s*\|.*?\|\s*([\d.]+) bits/byte", README.read_text())
    assert m, f"README has no validation-loss row for {name}"
    return float(m.group(1))


def test_shipped_models_are_listed_and_small():
    assert {"docs-byte", "docs-byte-draft"} <= set(available())
    root = Path(load_pretrained.__code__.co_filename).with_name("pretrained")
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert size < 10 * 2**20


@pytest.mark.parametrize("name", ["docs-byte", "docs-byte-draft"])
def test_loads_offline_fast_and_reaches_the_readme_loss(name):
    t0 = time.perf_counter()
    m = load_pretrained(name)
    assert time.perf_counter() - t0 < 2.0
    assert m.tokenizer.vocab_size == m.config.vocab_size == 257
    _, _, val_ids = byte_splits()
    with torch.no_grad():
        bpb = bits_per_byte(evaluate(m, val_ids))
    assert bpb == pytest.approx(readme_bpb(name), rel=0.02)


def test_draft_is_much_smaller_with_the_same_tokenizer():
    t, d = load_pretrained("docs-byte"), load_pretrained("docs-byte-draft")
    assert t.tokenizer.to_dict() == d.tokenizer.to_dict()
    assert sum(p.numel() for p in d.parameters()) * 10 < sum(p.numel() for p in t.parameters())


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(ValueError, match=r"available: \[.*'docs-byte'"):
        load_pretrained("gpt-5")
