"""Models: the interface, TinyGPT, KV cache, training, checkpoints, shipped weights and the HF adapter."""
from .config import GPTConfig
from .interface import CausalLM, LMOutput, ModelError, as_batch
from .kv_cache import KVCache
from .tinygpt import TinyGPT

__all__ = ["GPTConfig", "CausalLM", "LMOutput", "ModelError", "as_batch", "KVCache", "TinyGPT"]
