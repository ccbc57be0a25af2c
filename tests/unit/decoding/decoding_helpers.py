"""Statistics shared by the decoding tests (their models: tests.factories.peaked_gpt and byte_gpt)."""
from __future__ import annotations

import numpy as np
import torch
from scipy import stats


def chi_square(observed: np.ndarray, expected_probs: np.ndarray, min_expected: float = 5.0):
    """Chi-square goodness of fit, pooling cells with expected count < ``min_expected`` into one cell.

    A sample in a cell of zero probability is an immediate failure (p-value 0)."""
    observed = np.asarray(observed, dtype=float).ravel()
    p = np.asarray(expected_probs, dtype=float).ravel()
    n = observed.sum()
    if np.any((p <= 0) & (observed > 0)):
        return 0.0, np.inf
    exp = p / p.sum() * n
    small = exp < min_expected
    obs_c = np.concatenate([observed[~small], [observed[small].sum()]]) if small.any() else observed
    exp_c = np.concatenate([exp[~small], [exp[small].sum()]]) if small.any() else exp
    keep = exp_c > 0
    res = stats.chisquare(obs_c[keep], exp_c[keep])
    return float(res.pvalue), float(res.statistic)


@torch.no_grad()
def joint_first_two(model, prompt, pipe) -> np.ndarray:
    """Analytic ``P(x1, x2)`` ``(V, V)`` of the first two tokens under ``pipe`` (full forwards, no cache)."""
    ids = torch.tensor([prompt])
    V = model.config.vocab_size
    p1 = pipe.probs(model.forward(ids).logits[0, -1].float())
    ext = torch.cat([ids.expand(V, -1), torch.arange(V)[:, None]], 1)
    p2 = pipe.probs(model.forward(ext).logits[:, -1].float())
    return (p1[:, None] * p2).double().numpy()


def counts_two(tokens: torch.Tensor, V: int) -> np.ndarray:
    idx = (tokens[:, 0] * V + tokens[:, 1]).numpy()
    return np.bincount(idx, minlength=V * V).reshape(V, V)
