"""``python -m workbench.bench <area>``: side-by-side measurements against a named reference, same machine, same run.

Areas: models, tokenizers, attention, decoding, scaling, kernels, real, residual, memory, data.

Lesson: ``notebooks/00_tour.ipynb``.
"""
import sys
from importlib import import_module

AREAS = ("models", "tokenizers", "attention", "decoding", "scaling", "kernels", "real", "residual", "memory", "data")


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in AREAS:
        print(f"usage: python -m workbench.bench {{{','.join(AREAS)}}} [options]", file=sys.stderr)
        return 2
    try:
        mod = import_module(f"workbench.bench.{argv[0]}_bench")
    except ModuleNotFoundError as e:
        print(f"the {argv[0]} benchmark is not available yet ({e})", file=sys.stderr)
        return 2
    return mod.main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
