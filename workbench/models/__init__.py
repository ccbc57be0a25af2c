"""Models: the interface, TinyGPT, the recurrent (GLA) model, KV cache, training, checkpoints, shipped weights
and the HF adapter.

Lesson: ``notebooks/00_tour.ipynb``.
"""
from .checkpoint import CheckpointError, load, save
from .config import GPTConfig
from .interface import CausalLM, LMOutput, ModelError, as_batch
from .kv_cache import KVCache
from .pretrained import available, load_pretrained
from .recurrent import RecurrentCache, RecurrentConfig, RecurrentLM, StateCapture, capture_state
from .tinygpt import TinyGPT
from .training import TrainHistory, TrainRecord, evaluate, train

__all__ = [
    "GPTConfig", "CausalLM", "LMOutput", "ModelError", "as_batch", "KVCache", "TinyGPT",
    "CheckpointError", "save", "load", "available", "load_pretrained",
    "TrainHistory", "TrainRecord", "evaluate", "train", "from_hf",
    "RecurrentConfig", "RecurrentLM", "RecurrentCache", "StateCapture", "capture_state",
]


def from_hf(model_or_path, tokenizer=None, **kwargs):
    """Wrap a Hugging Face causal LM into the workbench interface (needs the ``hf`` extra); see ``hf_adapter``."""
    from .hf_adapter import from_hf as _from_hf

    return _from_hf(model_or_path, tokenizer, **kwargs)
