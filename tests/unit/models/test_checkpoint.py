import json

import pytest
import torch

from tests.factories import tiny_gpt
from workbench.models import CheckpointError, load, save
from workbench.models import checkpoint as ckpt
from workbench.tokenizers import ByteTokenizer


def model(seed=0):
    return tiny_gpt(ByteTokenizer(), seed=seed, name="ck", n_layer=1, n_head=2, n_embd=16, block_size=32, pos="alibi")


def test_round_trip_exact(tmp_path):
    m = model()
    save(m, tmp_path / "c", meta={"note": "x"})
    m2 = load(tmp_path / "c")
    ids = torch.randint(0, 257, (2, 20))
    assert torch.equal(m(ids).logits, m2(ids).logits)
    assert m2.tokenizer.encode("hi") == [104, 105] and m2.meta == {"note": "x"} and m2.name == "ck"
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]


def test_fp16_storage_loads_as_float32(tmp_path):
    m = model()
    save(m, tmp_path / "c", dtype=torch.float16)
    m2 = load(tmp_path / "c")
    assert m2.wte.weight.dtype == torch.float32
    torch.testing.assert_close(m2.wte.weight, m.wte.weight, atol=1e-3, rtol=1e-3)


def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    good = model(0)
    save(good, tmp_path / "c")

    def broken(state, path):
        open(path, "wb").write(b"partial")
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(ckpt, "save_file", broken)
    with pytest.raises(KeyboardInterrupt):
        save(model(1), tmp_path / "c")
    monkeypatch.undo()
    back = load(tmp_path / "c")
    assert torch.equal(back.wte.weight, good.wte.weight)
    assert [p.name for p in tmp_path.iterdir()] == ["c"]  # no temporary folders left behind


def test_overwrite_replaces(tmp_path):
    save(model(0), tmp_path / "c")
    second = model(1)
    save(second, tmp_path / "c")
    assert torch.equal(load(tmp_path / "c").wte.weight, second.wte.weight)


def test_truncated_and_tampered_weights(tmp_path):
    save(model(), tmp_path / "c")
    w = tmp_path / "c" / "model.safetensors"
    data = w.read_bytes()
    w.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or was modified"):
        load(tmp_path / "c")
    flipped = bytearray(data)
    flipped[-5] ^= 0xFF
    w.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="truncated or was modified"):
        load(tmp_path / "c")


def test_bad_config_files(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint folder"):
        load(tmp_path / "missing")
    save(model(), tmp_path / "c")
    cfg = tmp_path / "c" / "config.json"
    original = json.loads(cfg.read_text())
    cfg.write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load(tmp_path / "c")
    cfg.write_text(json.dumps({**original, "version": 99}))
    with pytest.raises(CheckpointError, match="version 99"):
        load(tmp_path / "c")
    cfg.write_text(json.dumps({**original, "config": {**original["config"], "n_layer": 3}}))
    with pytest.raises(CheckpointError, match="do not fit"):
        load(tmp_path / "c")


def test_weights_are_safetensors_not_pickle(tmp_path):
    save(model(), tmp_path / "c")
    raw = (tmp_path / "c" / "model.safetensors").read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])
    assert "wte.weight" in header and "lm_head.weight" not in header  # tied weights stored once
    assert not raw.startswith(b"\x80")  # not a pickle stream
