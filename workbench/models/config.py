"""GPTConfig: the hyper-parameters of a TinyGPT, saved as JSON next to its weights.

Lesson: ``notebooks/00_tour.ipynb`` (Train your own micro model).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

POSITIONAL = ("learned", "rope", "alibi")


@dataclass
class GPTConfig:
    """A decoder-only transformer's shape.

    ``pos`` picks the positional scheme: learned absolute embeddings, rotary (RoPE), or ALiBi biases.
    ``attn_only`` drops the MLPs (attention-only models for induction-head experiments).
    """

    vocab_size: int = 257
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 256
    pos: str = "learned"
    tied: bool = True
    dropout: float = 0.0
    bias: bool = True
    mlp_ratio: int = 4
    attn_only: bool = False
    rope_base: float = 10000.0

    def __post_init__(self):
        for name in ("vocab_size", "n_layer", "n_head", "n_embd", "block_size", "mlp_ratio"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive int, got {v!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.pos not in POSITIONAL:
            raise ValueError(f"pos must be one of {POSITIONAL}, got {self.pos!r}")
        if self.pos == "rope" and (self.n_embd // self.n_head) % 2:
            raise ValueError(f"rope needs an even head dimension, got {self.n_embd // self.n_head}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GPTConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown GPTConfig fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)
