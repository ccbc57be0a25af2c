"""Tiny random HF causal LMs of the common families, saved to a folder and loaded back offline.

Every lab is tested on these: ``folder = save_family("llama", tmp_path)`` then ``from_hf(folder)``. Each model has
2-3 layers of width 64 and a *padded* vocabulary (the model's embedding has ``MODEL_VOCAB`` rows, more than the
tokenizer's ``TOKENIZER_VOCAB`` ids), as real checkpoints such as Pythia, Qwen and Phi do. The tokenizer is a small
byte-level BPE trained with HF ``tokenizers`` on the embedded docs corpus and wrapped in
``PreTrainedTokenizerFast``. Nothing is downloaded.

``FAMILIES`` names the families; ``CORE_FAMILIES`` the ones the issue names explicitly (the rest are "others of the
same kind").
"""
from __future__ import annotations

import functools
from pathlib import Path

import torch

TOKENIZER_VOCAB = 300
MODEL_VOCAB = 320  # padded, as in real checkpoints: ids 300..319 have no text
WIDTH = 64


def _common(transformers):
    return dict(vocab_size=MODEL_VOCAB, hidden_size=WIDTH, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=128)


def _configs():
    import transformers as t

    c = _common(t)
    return {
        "gpt2": lambda: t.GPT2Config(vocab_size=MODEL_VOCAB, n_positions=128, n_embd=WIDTH, n_layer=2, n_head=4),
        "gpt_neox": lambda: t.GPTNeoXConfig(**c, rotary_pct=0.25),
        "llama": lambda: t.LlamaConfig(**c, num_key_value_heads=2),
        "qwen2": lambda: t.Qwen2Config(**c, num_key_value_heads=2),
        "qwen3": lambda: t.Qwen3Config(**c, num_key_value_heads=2, head_dim=16),
        "mistral": lambda: t.MistralConfig(**c, num_key_value_heads=2, sliding_window=8),
        "gemma2": lambda: t.Gemma2Config(**c, num_key_value_heads=2, head_dim=16, sliding_window=8,
                                         query_pre_attn_scalar=16),
        "phi": lambda: t.PhiConfig(**c, partial_rotary_factor=0.5),
        "opt": lambda: t.OPTConfig(vocab_size=MODEL_VOCAB, hidden_size=WIDTH, ffn_dim=128, num_hidden_layers=2,
                                   num_attention_heads=4, max_position_embeddings=128, word_embed_proj_dim=WIDTH),
        "phi3": lambda: t.Phi3Config(**c, num_key_value_heads=2, pad_token_id=0),
        "stablelm": lambda: t.StableLmConfig(**c, num_key_value_heads=2),
        "olmo2": lambda: t.Olmo2Config(**c, num_key_value_heads=2),
        "gemma3": lambda: t.Gemma3TextConfig(**c, num_key_value_heads=2, head_dim=16, sliding_window=8,
                                             query_pre_attn_scalar=16),
    }


CORE_FAMILIES = ("gpt2", "gpt_neox", "llama", "qwen2", "qwen3", "mistral", "gemma2", "phi", "opt")
FAMILIES = CORE_FAMILIES + ("phi3", "stablelm", "olmo2", "gemma3")


@functools.lru_cache(maxsize=None)
def hf_tokenizer():
    """A byte-level BPE of ``TOKENIZER_VOCAB`` ids (including ``<|endoftext|>``) as a ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from workbench.data import load_corpus

    text = load_corpus("python-docs")[:60_000]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=TOKENIZER_VOCAB, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([text], trainer)
    assert tok.get_vocab_size() == TOKENIZER_VOCAB
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>")


def build(family: str, seed: int = 0, **overrides):
    """A random ``transformers`` model of ``family`` (eval mode, float32)."""
    import transformers

    cfg = _configs()[family]()
    for k, v in overrides.items():
        setattr(cfg, k, v)
    cfg.bos_token_id = cfg.eos_token_id = 0
    torch.manual_seed(seed)
    return transformers.AutoModelForCausalLM.from_config(cfg).eval()


def save_family(family: str, folder, seed: int = 0, **overrides) -> Path:
    """Build ``family`` and save it with its tokenizer (``save_pretrained``) into ``folder/family``."""
    out = Path(folder) / family
    build(family, seed, **overrides).save_pretrained(out)
    hf_tokenizer().save_pretrained(out)
    return out


@functools.lru_cache(maxsize=None)
def _session_dir():
    import tempfile

    return Path(tempfile.mkdtemp(prefix="wb-hf-families-"))


def loaded(family: str, seed: int = 0):
    """``from_hf`` of a saved tiny ``family`` model, cached per process (do not modify it in a test)."""
    return _loaded(family, seed)


@functools.lru_cache(maxsize=None)
def _loaded(family, seed):
    from workbench.models import from_hf

    folder = _session_dir() / f"seed{seed}"
    path = folder / family
    if not path.exists():
        save_family(family, folder, seed)
    return from_hf(path)
