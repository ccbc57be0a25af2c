"""The shipped addition models: the emergence sweep's seven TinyGPTs, weights and all.

:mod:`workbench.scaling.make_emergence` ships only the scores of its sweep; repeated sampling
(:mod:`workbench.decoding.repeated`) needs the models themselves, to draw many answers per problem. These
follow seed 0 of that sweep's recipe (same sizes, data, steps and seed; trained on one thread, so not
bit-identical to the JSON's seed-0 rows: greedy exact match 0.026 / 0.028 / 0.070 / 0.748 / 0.798 / 0.848 /
0.858 from smallest to largest, recorded in each checkpoint's metadata), stored in float16 under ``addition_models/<name>/`` as
ordinary workbench checkpoints (about 1 MB together). Remade by
``python -m workbench.scaling.make_addition_models``.

Lesson: ``notebooks/03_decoding.ipynb`` (10. Repeated sampling).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import ScalingError

#: Folder of the shipped checkpoints, one subfolder per model size.
MODELS_DIR = Path(__file__).parent / "addition_models"


def model_name(n_layer: int, n_head: int, n_embd: int) -> str:
    """Folder name of one size, e.g. ``add2-L2-H4-d64``."""
    return f"add2-L{n_layer}-H{n_head}-d{n_embd}"


@dataclass(frozen=True)
class AdditionModelInfo:
    """One shipped addition model: its folder ``name``, non-embedding parameter count ``N``, and the greedy
    exact match of the shipped (float16-stored) weights on the ``n_test`` held-out problems."""

    name: str
    N: int
    n_layer: int
    n_head: int
    n_embd: int
    exact_match: float
    n_test: int


def addition_models() -> list[AdditionModelInfo]:
    """The shipped addition models, smallest first (empty when none are shipped)."""
    from workbench.models.checkpoint import read_meta

    out = []
    if not MODELS_DIR.is_dir():
        return out
    for p in MODELS_DIR.iterdir():
        if (p / "config.json").exists():
            m = read_meta(p)["meta"]
            out.append(AdditionModelInfo(name=p.name, N=int(m["N"]), n_layer=int(m["n_layer"]),
                                         n_head=int(m["n_head"]), n_embd=int(m["n_embd"]),
                                         exact_match=float(m["exact_match"]), n_test=int(m["n_test"])))
    return sorted(out, key=lambda i: i.N)


def load_addition_model(name: str):
    """Load one shipped addition model (a TinyGPT with a byte tokenizer, in eval mode) by folder name."""
    from workbench.models.checkpoint import load

    names = [i.name for i in addition_models()]
    if name not in names:
        raise ScalingError(f"no shipped addition model named {name!r}; available: {names} "
                           "(remake them with python -m workbench.scaling.make_addition_models)")
    model = load(MODELS_DIR / name)
    model.eval()
    return model


def addition_test_problems(n: int | None = None, *, seed: int = 0):
    """The held-out problems the shipped models were scored on (operand pairs never seen in training);
    the first ``n`` of them, or all 500."""
    from workbench.data.tasks import addition_problems

    from .emergence import held_out_problems
    from .make_emergence import DIGITS, N_TEST, N_TRAIN

    train = addition_problems(N_TRAIN, DIGITS, seed=seed)
    probs = held_out_problems(N_TEST, DIGITS, {(p.a, p.b) for p in train}, seed=seed + 1)
    if n is not None:
        if not 1 <= n <= N_TEST:
            raise ScalingError(f"n must be between 1 and {N_TEST}, got {n}")
        probs = probs[:n]
    return probs


#: Coverage and majority vote of the shipped models (remade by ``python -m workbench.scaling.make_repeated_sampling``).
REPEATED_JSON = Path(__file__).parent / "replays" / "repeated_sampling_addition.json"


def load_repeated_sampling(path=None, *, temperature: float | None = 1.0) -> list:
    """The shipped repeated-sampling runs (:class:`~workbench.decoding.repeated.RepeatedSampling`), smallest
    model first; only those at ``temperature`` (None: all)."""
    import json

    from workbench.decoding.repeated import RepeatedSampling

    p = Path(path) if path is not None else REPEATED_JSON
    if not p.exists():
        raise ScalingError(f"no repeated-sampling results at {p}; make them with "
                           "python -m workbench.scaling.make_repeated_sampling")
    doc = json.loads(p.read_text())
    if doc.get("format") != "workbench.repeated_sampling" or doc.get("version") != 1:
        raise ScalingError(f"{p} is not a version-1 repeated-sampling file")
    runs = [RepeatedSampling.from_dict(r) for r in doc["runs"]]
    if temperature is not None:
        runs = [r for r in runs if abs(r.temperature - temperature) < 1e-9]
    return sorted(runs, key=lambda r: (r.N, r.temperature))
