"""The core behind the TokenizerLab's "cut differently" outlines and the Playground's invalid-UTF-8 display."""
import random

import pytest

from workbench.tokenizers import ByteTokenizer, TokenSpan
from workbench.tokenizers.base import split_invalid_utf8
from workbench.tokenizers.experiments import crossing_spans, disagreeing_spans


def _segmentation(rng, n):
    cuts = sorted(rng.sample(range(1, n), rng.randint(0, n - 1)))
    edges = [0, *cuts, n]
    return [TokenSpan(k, a, b) for k, (a, b) in enumerate(zip(edges, edges[1:]))]


def _crosses_by_definition(t, others):
    """Brute force: some token of another segmentation overlaps ``t`` with neither containing the other."""
    return any(u.start < t.end and t.start < u.end
               and not (u.start <= t.start and t.end <= u.end) and not (t.start <= u.start and u.end <= t.end)
               for other in others for u in other)


def test_crossing_spans_equals_the_pairwise_definition_on_random_segmentations():
    rng = random.Random(0)
    for _ in range(300):
        n = rng.randint(1, 14)
        segs = [_segmentation(rng, n) for _ in range(rng.randint(2, 4))]
        want = {(t.start, t.end) for k, seg in enumerate(segs) for t in seg
                if _crosses_by_definition(t, segs[:k] + segs[k + 1:])}
        assert crossing_spans(segs) == want


def test_refinements_never_cross_and_crossing_is_mutual():
    bytes_ = [TokenSpan(i, i, i + 1) for i in range(6)]
    coarse = [TokenSpan(0, 0, 3), TokenSpan(1, 3, 6)]
    assert crossing_spans([bytes_, coarse]) == set() and len(disagreeing_spans([bytes_, coarse])) == 8
    assert crossing_spans([coarse, [TokenSpan(0, 0, 6)]]) == set()
    shifted = [TokenSpan(0, 0, 2), TokenSpan(1, 2, 6)]
    got = crossing_spans([coarse, shifted])
    assert got == {(0, 3), (2, 6)}  # each side has a token the other cuts across; (0, 2) and (3, 6) nest
    assert crossing_spans([coarse]) == set() and crossing_spans([]) == set()


def test_split_invalid_utf8_round_trips_every_byte():
    rng = random.Random(1)
    for _ in range(200):
        raw = bytes(rng.choice([rng.randrange(256), *"é東🙂a".encode()]) for _ in range(rng.randint(0, 20)))
        parts = split_invalid_utf8(raw)
        rebuilt = b"".join(t.encode() if k == "text" else bytes(int(t[i + 3:i + 5], 16) for i in range(0, len(t), 6))
                           for k, t in parts)
        assert rebuilt == raw
        assert all("\ufffd" not in t for k, t in parts if k == "text")
        assert "".join(t if k == "text" else "\ufffd" * 0 for k, t in parts) == raw.decode("utf-8", "ignore")


def test_decode_segments_names_bytes_and_placeholders():
    tok = ByteTokenizer()
    ids = [*"ok ".encode(), 0xE6, 0x9D, *"東".encode(), 0x80, 300]
    assert tok.decode_segments(ids) == [("text", "ok "), ("bytes", "<0xE6><0x9D>"), ("text", "東"),
                                        ("bytes", "<0x80>"), ("id", "<id 300>")]
    assert tok.decode_with_placeholders(ids) == "ok \ufffd東\ufffd<id 300>"  # what the segments replace
    assert tok.decode_segments([*"fine".encode()]) == [("text", "fine")]
    assert tok.decode_segments([]) == []


@pytest.mark.parametrize("text", ["café 東京 🙂", "plain"])
def test_decode_segments_of_valid_text_is_the_decoded_text(text):
    tok = ByteTokenizer()
    assert tok.decode_segments(tok.encode(text)) == [("text", text)]
