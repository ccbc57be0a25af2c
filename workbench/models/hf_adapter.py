"""Wrap a Hugging Face ``transformers`` causal LM (and its tokenizer) into the workbench model interface.

Nothing is downloaded unless the caller allows it (``allow_download=True`` or ``WORKBENCH_ALLOW_DOWNLOAD=1``, see
:mod:`workbench.models.zoo`): a local folder, a hub model already in the HF cache, or an in-memory model works offline.
Only safetensors weights are loaded (never pickles), and bad input gets a specific error: a folder without weights,
a model that is not a decoder-only causal LM, a tokenizer with more ids than the model's embedding.
``forward(ids, capture=True)`` works whatever attention back-end the model runs (SDPA, flash): for that call
the model is switched to the eager implementation, which returns ``softmax(QK^T / sqrt(d) + mask)`` per head,
and switched back afterwards. The attention lab's ``capture_attention`` instead recomputes the probabilities
from queries and keys recorded at the model layout's named points during one forward pass
(:mod:`workbench.models.layout`, found by introspection for any family that calls transformers' attention
interface), and uses this eager switch only for a family whose layout cannot be found.

Lesson: ``notebooks/00_tour.ipynb`` (The labs).
"""
from __future__ import annotations

import contextlib
import re
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

    @property
    def training(self) -> bool:
        return self.hf.training

    def train(self, mode: bool = True):
        """Like ``nn.Module.train``; lets :func:`workbench.models.training.evaluate` restore the mode."""
        self.hf.train(mode)
        return self

    def parameters(self):
        return self.hf.parameters()

    def named_parameters(self):
        return self.hf.named_parameters()

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
        # gradients only in training mode (workbench.models.train fine-tunes an HF model); inference never builds a graph
        with torch.set_grad_enabled(self.hf.training and torch.is_grad_enabled() and not capture):
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


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class NotCausalLMError(ModelError):
    """A model that is not a decoder-only causal LM (BERT-like encoders, T5/BART encoder-decoders, bare bodies)."""


class TokenizerMismatchError(ModelError):
    """A tokenizer with more ids than the model's embedding has rows: it cannot belong to this model."""


def _torch_dtype(dtype):
    """``"float32" | "bfloat16" | "float16"`` or a torch dtype -> torch dtype; None stays None."""
    if dtype is None or isinstance(dtype, torch.dtype) and dtype in _DTYPES.values():
        return dtype
    name = str(dtype).replace("torch.", "")
    if name in _DTYPES:
        return _DTYPES[name]
    raise ModelError(f"dtype {dtype!r} is not supported for model weights; use one of {list(_DTYPES)} "
                     "('bfloat16' halves the memory, e.g. a 124M model takes ~250 MB instead of ~500 MB)")


def _causal_names() -> set[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    names = set()
    for v in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values():
        names.update(v if isinstance(v, (tuple, list)) else (v,))
    return names


def _not_causal_reason(cfg, cls_name: str | None = None) -> str | None:
    """Why ``cfg`` (and, for an instance, its class) is not a decoder-only causal LM, or None when it is."""
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_MASKED_LM_MAPPING_NAMES)

    kind = getattr(cfg, "model_type", "") or type(cfg).__name__
    if getattr(cfg, "is_encoder_decoder", False):
        return f"it is an encoder-decoder model ({kind})"
    if kind in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(cfg, "is_decoder", False):
        return f"{kind} is a bidirectional encoder (a masked LM): every token sees the tokens after it"
    if cls_name is not None:
        if cls_name not in _causal_names() and not cls_name.endswith(("ForCausalLM", "LMHeadModel")):
            return f"{cls_name} has no causal language-model head"
    elif kind not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return f"transformers has no causal-LM class for model type {kind!r}"
    return None


def _raise_if_not_causal(cfg, what: str, cls_name: str | None = None) -> None:
    reason = _not_causal_reason(cfg, cls_name)
    if reason:
        raise NotCausalLMError(
            f"{what} is not a decoder-only causal LM: {reason}. The workbench needs a decoder-only causal LM "
            "(GPT-2, Pythia/GPT-NeoX, Llama, Qwen, Mistral, Gemma, Phi, OPT, ...): a model that predicts each "
            "next token from the tokens before it, loadable with AutoModelForCausalLM.")


def _check_tokenizer(tokenizer, hf) -> None:
    emb = hf.get_input_embeddings() if hasattr(hf, "get_input_embeddings") else None
    rows = getattr(emb, "num_embeddings", None) or _config_view(hf.config).vocab_size
    if tokenizer is not None and tokenizer.vocab_size > rows:
        raise TokenizerMismatchError(
            f"the tokenizer has {tokenizer.vocab_size} ids but the model's embedding has only {rows} rows, so ids "
            f"{rows}..{tokenizer.vocab_size - 1} would index past it: this tokenizer does not belong to this model. "
            "Pass the tokenizer saved with the model (from_hf(folder) loads the one in the folder) or "
            "tokenizer=None. (A tokenizer with fewer ids than the model is normal: padded vocabularies.)")


def _folder(model_or_path, allow_download, revision, cache_dir) -> tuple[str, str]:
    """A local model folder for a path or hub name -> (folder, name); specific errors for the bad cases."""
    from pathlib import Path

    from . import zoo

    raw = str(model_or_path)
    p = Path(raw).expanduser()
    if p.is_dir():
        zoo.check_weights(p)
        if not (p / "config.json").is_file():
            raise ModelError(f"cannot load an HF causal LM from {raw!r}: it has weights but no config.json; "
                             "save the model with model.save_pretrained(folder), which writes both")
        return str(p), raw
    if p.exists():
        raise ModelError(f"cannot load an HF causal LM from {raw!r}: it is a file; pass the folder that holds "
                         "config.json and the *.safetensors weights")
    if isinstance(model_or_path, str) and zoo.looks_like_hub_name(raw):
        return str(zoo.resolve(raw, allow_download=allow_download, revision=revision, cache_dir=cache_dir)), raw
    raise ModelError(f"cannot load an HF causal LM from {raw!r}: there is no such folder (and it is not a hub "
                     "name like 'EleutherAI/pythia-70m'); pass a folder written by save_pretrained")


def _from_pretrained_dtype_kw() -> str:
    import transformers

    major, minor = (int(x) for x in re.findall(r"\d+", transformers.__version__)[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def from_hf(model_or_path, tokenizer=None, *, dtype=None, device=None, attn_implementation: str | None = None,
            allow_download: bool | None = None, revision: str | None = None, cache_dir=None,
            local_files_only: bool | None = None):
    """Wrap an HF decoder-only causal LM: an instance, a local folder, or a hub name.

    ``model_or_path``: a ``transformers`` model instance, a folder written by ``save_pretrained`` (config.json plus
    ``*.safetensors``; pickle ``*.bin`` weights are refused), or a hub name such as ``"EleutherAI/pythia-70m"``,
    which loads from the local HF cache, or is downloaded only with ``allow_download=True`` (or the environment
    variable ``WORKBENCH_ALLOW_DOWNLOAD=1``; see :mod:`workbench.models.zoo`). ``local_files_only=False`` is an
    older spelling of ``allow_download=True``.

    ``dtype``: the weights' dtype, ``"float32"`` (the default for folders and hub names) or ``"bfloat16"``
    (half the memory: a 124M model fits Binder's 2 GB); an instance keeps its dtype unless one is given. Logits
    ``(B, T, V)`` are returned as float32 either way. ``device`` moves the model there.

    ``tokenizer`` may be a ``transformers`` tokenizer, a ``tokenizers.Tokenizer``, a workbench tokenizer, or None
    (then it is loaded from the same folder when one is there). It must not have more ids than the model's
    embedding has rows (fewer is normal: padded vocabularies).

    Raises specific :class:`~workbench.models.interface.ModelError` subclasses for a hub name without permission
    (``zoo.DownloadNotAllowedError``), a folder without weights (``zoo.MissingWeightsError``), pickle-only weights
    (``zoo.UnsafeWeightsError``), a model that is not a causal LM (:class:`NotCausalLMError`) and a tokenizer that
    does not fit (:class:`TokenizerMismatchError`).
    """
    _require_transformers()
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if local_files_only is False and allow_download is None:
        allow_download = True
    torch_dtype = _torch_dtype(dtype)
    if isinstance(model_or_path, HFModel):
        if torch_dtype is not None:
            model_or_path.hf.to(torch_dtype)
        if device is not None:
            model_or_path.hf.to(device)
        return model_or_path
    if isinstance(model_or_path, torch.nn.Module):
        hf = model_or_path
        path = name = None
        if not hasattr(hf, "config") or not callable(getattr(hf, "forward", None)):
            raise NotCausalLMError(f"{type(hf).__name__} is not an HF causal LM (it has no .config); pass a "
                                   "transformers model such as AutoModelForCausalLM.from_pretrained(folder)")
        _raise_if_not_causal(hf.config, f"the {type(hf).__name__} instance", type(hf).__name__)
        if torch_dtype is not None:
            hf.to(torch_dtype)
    else:
        path, name = _folder(model_or_path, allow_download, revision, cache_dir)
        try:
            cfg = AutoConfig.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError, KeyError) as e:
            raise ModelError(f"cannot load an HF causal LM from {name!r}: its config.json is not one transformers "
                             f"knows ({e}); update transformers or pass a supported model") from None
        _raise_if_not_causal(cfg, f"the model in {name!r}")
        kw = {"local_files_only": True, "use_safetensors": True,
              _from_pretrained_dtype_kw(): torch_dtype or torch.float32}
        if attn_implementation:
            kw["attn_implementation"] = attn_implementation
        try:
            hf = AutoModelForCausalLM.from_pretrained(path, **kw)
        except OSError as e:
            raise ModelError(f"cannot load an HF causal LM from {name!r}: {e}") from None
    if attn_implementation and path is None:
        hf.set_attn_implementation(attn_implementation)
    if device is not None:
        hf.to(device)
    if tokenizer is None and path is not None:
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError):
            tokenizer = None
    if tokenizer is not None and not isinstance(tokenizer, Tokenizer):
        tokenizer = HFTokenizer(tokenizer)
    _check_tokenizer(tokenizer, hf)
    return HFModel(hf, tokenizer, name=name)
