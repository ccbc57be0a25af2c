"""The Playground and the DecodingLab on HF models with padded vocabularies, driven from Python: padding ids the
tokenizer cannot decode are drawn as ``<id N>`` everywhere, the mask checkbox keeps them out, nothing crashes."""
from __future__ import annotations

import html

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("jupyter_bokeh")
from tests.unit.decoding.hf_padded import padded_model  # noqa: E402
from tests import hf_families as F  # noqa: E402
from widgets import Playground  # noqa: E402
from widgets.decoding_lab import DecodingLab  # noqa: E402
from workbench.decoding import beam_search, greedy  # noqa: E402
from workbench.decoding.strategies import MASK_STAGE  # noqa: E402
from workbench.models.predict import next_token  # noqa: E402

torch.set_num_threads(1)

PROMPT = "The for statement is used"
ESC = html.escape("<id 301>")


@pytest.fixture(scope="module")
def target():
    return padded_model("gpt2")


@pytest.fixture(scope="module")
def draft():
    return padded_model("gpt2", seed=4, pushed={301: 2.0})


def _no_error(w) -> bool:
    return "#b00020" not in w.value  # the error colour of widgets.base.set_notice


def test_playground_shows_and_masks_padding_ids(target):
    pg = Playground(target, prompt=PROMPT, debounce=0, max_new_tokens=12)
    assert _no_error(pg.info)
    want = next_token(target, PROMPT, 10)
    d = pg.source.data
    assert d["id"] == want.ids and d["id"][0] == 301
    assert d["label"][0] == "1. <id 301>" and "310" in " ".join(d["label"])
    grey = {i for i, c in zip(d["id"], d["color"]) if c == "#AAAAAA"}
    assert grey == {i for i in d["id"] if i >= F.TOKENIZER_VOCAB}
    probs = torch.softmax(target.forward(torch.tensor([target.tokenizer.encode(PROMPT)])).logits[0, -1], -1)
    assert want.undecodable_mass == pytest.approx(float(probs[F.TOKENIZER_VOCAB:].sum()), rel=1e-5)
    assert "ids without text" in pg.info.value
    assert not pg.mask_undecodable.disabled
    pg.temperature.value = 0.0
    pg.sample_button.click()
    assert pg.last_continuation.ids[0] == 301 and ESC in pg.continuation.value
    pg.mask_undecodable.value = True
    pg.sample_button.click()
    assert max(pg.last_continuation.ids) < F.TOKENIZER_VOCAB and "&lt;id" not in pg.continuation.value
    pg.temperature.value = 1.0
    pg.sample_button.click()
    assert max(pg.last_continuation.ids) < F.TOKENIZER_VOCAB


def test_playground_mask_box_disabled_when_every_id_has_text(tiny_model):
    assert Playground(tiny_model, prompt="abc", debounce=0).mask_undecodable.disabled


def test_decoding_lab_every_view_shows_placeholders(target, draft):
    lab = DecodingLab(target, draft, prompt=PROMPT, strategy="greedy", max_new_tokens=6, debounce=0)
    assert _no_error(lab.info) and not lab.mask_undecodable.disabled
    want = greedy(target, PROMPT, 6)
    assert lab.result.tokens == want.tokens and want.tokens[0] == 301
    assert "<id 301>" in lab.stage_source.data["token"]
    assert "<id 301>" in lab.stage_figure.title.text
    lab.play_button.click()
    assert ESC in lab.text_view.value
    assert lab.timeline_source.data["token"][0] == "<id 301>"

    lab.mask_undecodable.value = True  # recomputes
    assert _no_error(lab.info)
    assert lab.result.tokens == greedy(target, PROMPT, 6, mask_undecodable=True).tokens
    assert max(lab.result.tokens) < F.TOKENIZER_VOCAB
    assert MASK_STAGE in set(lab.stage_source.data["stage"])
    lab.mask_undecodable.value = False

    lab.strategy.value = "beam"
    assert _no_error(lab.info)
    assert lab.result.best.tokens == beam_search(target, PROMPT, int(lab.num_beams.value), 6).best.tokens
    lab.play_button.click()
    assert "<id 301>" in lab.beam_nodes.data["token"]

    lab.strategy.value = "diverse_beam"
    assert _no_error(lab.info)
    lab.strategy.value = "prompt_lookup"
    assert _no_error(lab.info) and lab.result.tokens == want.tokens

    lab.strategy.value = "speculative"
    assert _no_error(lab.info), lab.info.value
    lab.play_button.click()
    assert "<id 301>" in lab.spec_source.data["token"]
    assert ESC in lab.text_view.value

    lab.compare_with.value = ("greedy", "beam", "speculative")
    lab.compare_button.click()
    assert _no_error(lab.info) and ESC in lab.compare_view.value
    lab.mask_undecodable.value = True
    lab.compare_button.click()
    assert "&lt;id" not in lab.compare_view.value


def test_decoding_lab_hf_pair_from_folders():
    """Bug 1 in the lab: an HF target and draft loaded from separate folders (separate tokenizer files)."""
    lab = DecodingLab(F.loaded("llama", 0), F.loaded("llama", 1), prompt=PROMPT, strategy="speculative",
                      max_new_tokens=8, debounce=0)
    assert _no_error(lab.info), lab.info.value
    assert len(lab.result.tokens) == 8


def test_decoding_lab_different_vocabularies_is_a_visible_notice(target):
    from workbench.data import load_corpus
    from workbench.models import from_hf
    from workbench.tokenizers import BPETokenizer

    other = BPETokenizer.train(load_corpus("python-code")[:30_000], F.TOKENIZER_VOCAB,
                               special_tokens=["<|endoftext|>"], progress=False)
    wrong = from_hf(F.build("gpt2", seed=1), tokenizer=other)
    lab = DecodingLab(target, wrong, prompt=PROMPT, strategy="speculative", max_new_tokens=4, debounce=0)
    assert not _no_error(lab.info) and "different vocabularies" in lab.info.value
