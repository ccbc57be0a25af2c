"""The data lab: a language model as a compressor, and experiments about the data a model is trained on.

Modules: :mod:`.errors` (``DataLabError`` and its subclasses), :mod:`.coder` (arithmetic coding on integer
frequencies), :mod:`.compress` (model-driven ``compress``/``decompress``), :mod:`.baselines` (gzip, bz2, lzma,
zstd and the models in bits per byte).
"""
from .errors import DataLabError

__all__ = ["DataLabError"]
# Experiments about the training data (issue #15): .selection, .mixing, .distill, .traps (live runs and shipped-sweep loaders), .recipes, .make_sweeps (sweeps/).
