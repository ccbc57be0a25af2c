"""GPTConfig: the hyper-parameters of a TinyGPT, saved as JSON next to its weights.

Lesson: ``notebooks/00_tour.ipynb`` (Train your own micro model).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

POSITIONAL = ("learned", "rope", "alibi")


def check_int(cfg, name: str, lo: int = 1, hi: int | None = None, what: str = "") -> None:
    """Raise ``ValueError`` naming the config class and field unless ``cfg.<name>`` is an int (not a bool) in
    ``[lo, hi]`` (no upper bound when ``hi`` is None); ``what`` says what the field is, in the message.

    >>> check_int(GPTConfig(), "n_layer", lo=5)
    Traceback (most recent call last):
    ...
    ValueError: GPTConfig.n_layer must be an int >= 5, got 4
    """
    v = getattr(cfg, name)
    if not isinstance(v, int) or isinstance(v, bool) or v < lo or (hi is not None and v > hi):
        kind = f"an int in [{lo}, {hi}]" if hi is not None else "a positive int" if lo == 1 else f"an int >= {lo}"
        raise ValueError(f"{type(cfg).__name__}.{name}{f' ({what})' if what else ''} must be {kind}, got {v!r}")


def check_config(cfg, positive: tuple) -> None:
    """The checks every model config shares (:class:`GPTConfig`, ``RecurrentConfig``): each field named in
    ``positive`` is an int >= 1, ``n_head`` divides ``n_embd``, and ``dropout`` is in [0, 1). Messages name the
    class and field."""
    for name in positive:
        check_int(cfg, name)
    cls = type(cfg).__name__
    if cfg.n_embd % cfg.n_head:
        raise ValueError(f"{cls}.n_embd ({cfg.n_embd}) must be divisible by n_head ({cfg.n_head})")
    if not 0.0 <= cfg.dropout < 1.0:
        raise ValueError(f"{cls}.dropout must be in [0, 1), got {cfg.dropout}")


class ConfigDict:
    """``to_dict``/``from_dict`` of a model config dataclass (the JSON saved next to its weights); ``from_dict``
    names the class and the fields it does not know."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


@dataclass
class GPTConfig(ConfigDict):
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
        check_config(self, ("vocab_size", "n_layer", "n_head", "n_embd", "block_size", "mlp_ratio"))
        if self.pos not in POSITIONAL:
            raise ValueError(f"GPTConfig.pos must be one of {POSITIONAL}, got {self.pos!r}")
        if self.pos == "rope" and (self.n_embd // self.n_head) % 2:
            raise ValueError(f"GPTConfig: rope needs an even head dimension, got {self.n_embd // self.n_head}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head
