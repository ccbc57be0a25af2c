"""Wrap a Hugging Face ``transformers`` causal LM (and its tokenizer) into the workbench model interface.

Nothing is downloaded unless the caller asks for a hub name: a local folder or an in-memory model works offline.
``forward(ids, capture=True)`` works whatever attention back-end the model runs (SDPA, flash): for that call
the model is switched to the eager implementation, which returns ``softmax(QK^T / sqrt(d) + mask)`` per head,
and switched back afterwards. The attention lab's ``capture_attention`` instead recomputes the probabilities
from queries and keys hooked during an ordinary forward pass for GPT-2 and Llama-style models
(``workbench.attention.hf_recompute``), and uses this eager switch only for other families.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
import torch

from ..tokenizers.base import Tokenizer
from ..tokenizers.hf_interop import HFTokenizer
from .interface import LMOutput, ModelError, as_batch, check_ids


def _require_transformers():
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise ImportError(
            "from_hf needs the optional 'hf' extra: pip install 'lm-workbench[hf]' (transformers, tokenizers)"
        ) from None
    return transformers


@dataclass
class HFConfigView:
    """The workbench's view of an HF config: the common shape fields plus the original config as ``hf``."""

    vocab_size: int
    n_layer: int
    n_head: int
    n_embd: int
    block_size: int
    n_kv_head: int
    hf: object


def _config_view(cfg) -> HFConfigView:
    def first(*names, default=None):
        for n in names:
            v = getattr(cfg, n, None)
            if v is not None:
                return v
        return default

    text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    n_head = first("num_attention_heads", "n_head")
    return HFConfigView(
        vocab_size=text_cfg.vocab_size,
        n_layer=first("num_hidden_layers", "n_layer"),
        n_head=n_head,
        n_embd=first("hidden_size", "n_embd", "d_model"),
        block_size=first("max_position_embeddings", "n_positions", "n_ctx", default=2048),
        n_kv_head=first("num_key_value_heads", default=n_head),
        hf=cfg,
    )


class HFCache:
    """An HF ``DynamicCache`` behind the workbench cache interface (``length``, ``reorder``, ``crop``)."""

    def __init__(self, batch_size: int, max_len: int):
        from transformers import DynamicCache

        self.pkv = DynamicCache()
        self.batch_size = batch_size
        self.max_len = max_len

    @property
    def length(self) -> int:
        return int(self.pkv.get_seq_length())

    def reorder(self, index: torch.Tensor) -> None:
        self.pkv.reorder_cache(index)
        self.batch_size = int(index.numel())

    def crop(self, length: int) -> None:
        if not 0 <= length <= self.length:
            raise ModelError(f"cannot crop a cache of length {self.length} to {length}")
        if length < self.length:  # a negative count removes that many tokens in transformers 4.x and 5.x alike
            self.pkv.crop(length - self.length)


class HFModel:
    """An HF causal LM behind the workbench interface (see :mod:`workbench.models.interface`)."""

    supports_capture = True

    def __init__(self, hf_model, tokenizer=None, name: str | None = None):
        self.hf = hf_model.eval()
        self.config = _config_view(hf_model.config)
        if tokenizer is not None and not isinstance(tokenizer, Tokenizer):
            tokenizer = HFTokenizer(tokenizer)
        self.tokenizer = tokenizer
        self.name = name or getattr(hf_model.config, "_name_or_path", "") or type(hf_model).__name__

    @property
    def device(self) -> torch.device:
        return next(self.hf.parameters()).device

    def eval(self):
        self.hf.eval()
        return self

    def parameters(self):
        return self.hf.parameters()

    @property
    def attn_implementation(self) -> str:
        return getattr(self.hf.config, "_attn_implementation", None) or "eager"

    @contextlib.contextmanager
    def _eager(self):
        before = self.attn_implementation
        if before == "eager":
            yield
            return
        self.hf.set_attn_implementation("eager")
        try:
            yield
        finally:
            self.hf.set_attn_implementation(before)

    def _check(self, ids, past: int = 0):
        ids = as_batch(ids, self.device)
        check_ids(ids, self.config.vocab_size)
        if past + ids.size(1) > self.config.block_size:
            raise ModelError(
                f"sequence of {past + ids.size(1)} tokens is longer than the context of {self.config.block_size}"
            )
        return ids

    def _call(self, ids, capture: bool, cache: HFCache | None):
        kw = dict(use_cache=cache is not None)
        if cache is not None:
            kw["past_key_values"] = cache.pkv
        with torch.no_grad():
            if not capture:
                out = self.hf(input_ids=ids, **kw)
                return LMOutput(out.logits.float())
            with self._eager():
                out = self.hf(input_ids=ids, output_attentions=True, output_hidden_states=True, **kw)
        return LMOutput(out.logits.float(), torch.stack(out.attentions).float(), torch.stack(out.hidden_states).float())

    def forward(self, ids, capture: bool = False) -> LMOutput:
        """ids ``(B, T)`` -> logits ``(B, T, V)``; with capture, attentions ``(L, B, H, T, T)`` and hidden states
        ``(L + 1, B, T, D)`` as HF reports them (for GPT-2 the last one is after the final layer norm)."""
        return self._call(self._check(ids), capture, None)

    __call__ = forward

    def new_cache(self, batch_size: int = 1, max_len: int | None = None) -> HFCache:
        return HFCache(batch_size, max_len or self.config.block_size)

    def step(self, ids, cache: HFCache, capture: bool = False) -> LMOutput:
        return self._call(self._check(ids, cache.length), capture, cache)

    def __repr__(self) -> str:
        c = self.config
        return f"HFModel({self.name!r}, layers={c.n_layer}, heads={c.n_head}, width={c.n_embd}, vocab={c.vocab_size})"


def from_hf(model_or_path, tokenizer=None, *, attn_implementation: str | None = None, local_files_only: bool = True):
    """Wrap an HF causal LM: an instance, or a local folder / hub name loaded with ``AutoModelForCausalLM``.

    ``tokenizer`` may be a ``transformers`` tokenizer, a ``tokenizers.Tokenizer``, a workbench tokenizer, or None
    (then it is loaded from the same folder when one is there). Hub downloads happen only with
    ``local_files_only=False``.
    """
    _require_transformers()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if isinstance(model_or_path, HFModel):
        return model_or_path
    if isinstance(model_or_path, torch.nn.Module):
        hf = model_or_path
        path = None
    else:
        path = str(model_or_path)
        kw = {"local_files_only": local_files_only}
        if attn_implementation:
            kw["attn_implementation"] = attn_implementation
        try:
            hf = AutoModelForCausalLM.from_pretrained(path, **kw)
        except OSError as e:
            raise ModelError(f"cannot load an HF causal LM from {path!r}: {e}") from None
    if not hasattr(hf, "config") or not callable(getattr(hf, "forward", None)):
        raise ModelError(f"{type(hf).__name__} is not an HF causal LM")
    if attn_implementation and path is None:
        hf.set_attn_implementation(attn_implementation)
    if tokenizer is None and path is not None:
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local_files_only)
        except (OSError, ValueError):
            tokenizer = None
    return HFModel(hf, tokenizer, name=path)
