"""The TokenizerLab with the tokenizers of real HF models (here the byte-level BPE every tiny family in
tests/hf_families.py loads from its folder), beside the workbench's own: metrics equal the core's measure()."""
import pytest

pytest.importorskip("transformers")

from tests import hf_families as F  # noqa: E402
from widgets.tokenizer_lab import TokenizerLab  # noqa: E402
from workbench.tokenizers import ByteTokenizer  # noqa: E402
from workbench.tokenizers.metrics import measure  # noqa: E402


@pytest.mark.parametrize("family", ["gpt2", "llama", "qwen3"])
def test_tokenizer_lab_shows_an_hf_models_tokenizer(family):
    tok = F.loaded(family).tokenizer
    text = "def area(r):\n    return 3.14159 * r ** 2  # π r²\n"
    lab = TokenizerLab({"model": tok, "bytes": ByteTokenizer()}, text=text, debounce=0)
    assert "error" not in lab.info.value.lower(), lab.info.value
    got = lab.metrics_source.data
    want = measure(tok, text)
    i = got["name"].index("model")
    assert got["bytes_per_token"][i] == pytest.approx(want.bytes_per_token)
    assert want.bytes_per_token > 1.1  # the 300-id BPE merges some pairs: a real comparison with bytes (1.0)
    assert tok.decode(tok.encode(text)) == text
