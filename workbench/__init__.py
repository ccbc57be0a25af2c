"""The LM workbench's core: tokenizers, models, attention, decoding, scaling laws, kernels and benchmarks, each a
package that a lesson in ``notebooks/`` teaches (``00_tour`` first) and a widget in :mod:`widgets` draws.
"""
