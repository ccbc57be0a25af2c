"""Embedded corpora and seeded synthetic tasks.

Lesson: ``notebooks/00_tour.ipynb``.
"""
from .corpus import EMBEDDED, CorpusError, load_corpus, train_val_split
from .tasks import AdditionProblem, addition_problems, addition_text, repeated_random_sequences

__all__ = [
    "EMBEDDED", "CorpusError", "load_corpus", "train_val_split",
    "AdditionProblem", "addition_problems", "addition_text", "repeated_random_sequences",
]
