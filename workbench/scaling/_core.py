"""The machinery under every fit: a log-sum-exp law, its Huber objective, and a batched L-BFGS over starts.

A law here is ``log L_hat = logsumexp(e, a_1 - p_{j(1)} x_1, ..., a_K - p_{j(K)} x_K)`` where the ``x_k`` are
log-features (``log N``, ``log D``, ...) and term ``k`` uses exponent ``j(k)``. Chinchilla's law is
``E + A/N^alpha + B/D^beta``: terms ``(log N, alpha)`` and ``(log D, beta)``. Parameters are stored as
``[e, a_1..a_K, p_1..p_J]`` (``E = exp(e)``, ``A_k = exp(a_k)``), which keeps every coefficient positive and
the objective smooth. The objective is the (weighted) sum, or mean, of Huber(delta) losses of the log
residuals ``log L_hat - log L``.

Every start of a grid is an independent L-BFGS problem. Running thousands of them one at a time costs
mostly Python overhead, so :func:`batched_lbfgs` advances all of them together: each start keeps its own
curvature history and its own backtracking line search, and only the arithmetic is shared (one tensor
operation over starts x points). The best few end points are then polished with
:func:`scipy.optimize.minimize` (L-BFGS-B) at tight tolerances, so the reported optimum is the one scipy
certifies.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import minimize


@dataclass(frozen=True)
class LawSpec:
    """Structure of a log-sum-exp law: log-features ``(K, n)`` and the exponent index of each term."""

    features: np.ndarray      # (K, n) log-features
    exponent_index: tuple     # length K, values in range(J)
    n_exponents: int          # J

    @property
    def n_params(self) -> int:
        return 1 + len(self.exponent_index) + self.n_exponents


def huber(r: np.ndarray, delta: float) -> np.ndarray:
    """Huber loss: quadratic within ``delta`` of zero, linear (slope ``delta``) outside."""
    d = np.clip(r, -delta, delta)
    return d * (r - 0.5 * d)


def law_log_prediction(params: np.ndarray, spec: LawSpec) -> np.ndarray:
    """``log L_hat`` for one parameter vector (numpy)."""
    K = len(spec.exponent_index)
    terms = [np.full(spec.features.shape[1], params[0])]
    for k in range(K):
        terms.append(params[1 + k] - params[1 + K + spec.exponent_index[k]] * spec.features[k])
    return np.logaddexp.reduce(np.stack(terms), axis=0)


def objective_numpy(params: np.ndarray, spec: LawSpec, log_y: np.ndarray, delta: float, norm: float,
                    weights: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """Huber objective and its gradient for one parameter vector: the reference implementation.

    ``norm`` is 1 for a summed loss and the number of points for a mean.
    """
    K = len(spec.exponent_index)
    n = spec.features.shape[1]
    T = np.empty((K + 1, n))
    T[0] = params[0]
    for k in range(K):
        T[k + 1] = params[1 + k] - params[1 + K + spec.exponent_index[k]] * spec.features[k]
    mx = T.max(axis=0)
    U = np.exp(T - mx)
    s = U.sum(axis=0)
    r = mx + np.log(s) - log_y
    dh = np.clip(r, -delta, delta)
    h = dh * (r - 0.5 * dh)
    if weights is not None:
        h = h * weights
        dh = dh * weights
    G = dh * (U / s)
    grad = np.zeros(spec.n_params)
    grad[0] = G[0].sum()
    for k in range(K):
        grad[1 + k] = G[k + 1].sum()
        grad[1 + K + spec.exponent_index[k]] -= G[k + 1] @ spec.features[k]
    return float(h.sum() / norm), grad / norm


class BatchedObjective:
    """The same objective for a batch of parameter vectors (torch, float64), optionally one weight row each.

    ``weights`` (bootstrap resampling counts) is ``(B, n)`` or None; calls pass the batch rows they need.
    """

    def __init__(self, spec: LawSpec, log_y: np.ndarray, delta: float, norm: float,
                 weights: np.ndarray | None = None):
        self.K = len(spec.exponent_index)
        self.idx = spec.exponent_index
        self.P = spec.n_params
        self.X = torch.as_tensor(spec.features, dtype=torch.float64)
        self.log_y = torch.as_tensor(log_y, dtype=torch.float64)
        self.delta = float(delta)
        self.norm = float(norm)
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        self.n_evals = 0

    def __call__(self, params: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        K = self.K
        self.n_evals += params.shape[0]
        terms = [params[:, :1].expand(-1, self.X.shape[1])]
        for k in range(K):
            p = params[:, 1 + K + self.idx[k]:2 + K + self.idx[k]]
            terms.append(params[:, 1 + k:2 + k] - p * self.X[k])
        T = torch.stack(terms)                      # (K+1, b, n)
        mx = T.amax(0)
        U = torch.exp(T - mx)
        s = U.sum(0)
        r = mx + torch.log(s) - self.log_y
        dh = r.clamp(-self.delta, self.delta)
        h = dh * (r - 0.5 * dh)
        if self.weights is not None:
            w = self.weights[rows]
            h = h * w
            dh = dh * w
        f = h.sum(1) / self.norm
        G = (dh / s) * U                            # (K+1, b, n)
        g = params.new_zeros(params.shape)
        g[:, 0] = G[0].sum(1)
        for k in range(K):
            g[:, 1 + k] = G[k + 1].sum(1)
            g[:, 1 + K + self.idx[k]] -= G[k + 1] @ self.X[k]
        return f, g / self.norm


@dataclass
class BatchResult:
    """End points of a batched run: parameters, objectives, iterations and a status code per start.

    status: 1 gradient small, 2 objective stopped decreasing, 3 line search failed, 4 iteration cap.
    """

    x: np.ndarray
    f: np.ndarray
    n_iter: np.ndarray
    status: np.ndarray


def batched_lbfgs(fg, x0: np.ndarray, *, history: int = 10, max_iter: int = 2000, gtol: float = 1e-12,
                  ftol: float = 1e-14, c1: float = 1e-4, max_backtracks: int = 60) -> BatchResult:
    """Minimise ``B`` independent problems at once, ``fg(x (b, P), rows) -> (f (b,), g (b, P))``.

    Each row is its own L-BFGS run (own history, own Armijo backtracking); rows leave the batch as they
    converge so stragglers do not keep paying for the finished ones.
    """
    x = torch.as_tensor(np.asarray(x0, dtype=np.float64)).clone()
    B, P = x.shape
    rows_all = torch.arange(B)
    f, g = fg(x, rows_all)
    S = x.new_zeros(history, B, P)
    Y = x.new_zeros(history, B, P)
    rho = x.new_zeros(history, B)
    gamma = x.new_zeros(B)                 # 0 = no curvature information yet
    n_iter = torch.zeros(B, dtype=torch.long)
    status = torch.zeros(B, dtype=torch.long)
    done0 = ~torch.isfinite(f) | (g.abs().amax(1) <= gtol)
    status[done0] = torch.where(torch.isfinite(f[done0]), 1, 3)
    active = rows_all[~done0]
    for k in range(max_iter):
        if active.numel() == 0:
            break
        xa, fa, ga = x[active], f[active], g[active]
        Sa, Ya, ra = S[:, active], Y[:, active], rho[:, active]
        q = -ga
        order = [(k - 1 - j) % history for j in range(min(k, history))]
        coef = []
        for slot in order:                  # newest to oldest
            a_j = ra[slot] * (Sa[slot] * q).sum(1)
            q = q - a_j[:, None] * Ya[slot]
            coef.append(a_j)
        gam = gamma[active]
        have = gam > 0
        q = torch.where(have[:, None], gam[:, None] * q, q)
        for slot, a_j in zip(reversed(order), reversed(coef)):
            b_j = ra[slot] * (Ya[slot] * q).sum(1)
            q = q + (a_j - b_j)[:, None] * Sa[slot]
        d = q
        gd = (ga * d).sum(1)
        reset = ~(gd < 0) | ~torch.isfinite(gd)
        if reset.any():
            d[reset] = -ga[reset]
            gd = (ga * d).sum(1)
            have = have & ~reset
        t = torch.where(have, torch.ones_like(gd), 1.0 / d.norm(dim=1).clamp_min(1e-300))
        x_new, f_new, g_new = xa.clone(), fa.clone(), ga.clone()
        pending = torch.ones(len(active), dtype=torch.bool)
        for _ in range(max_backtracks):
            pi = pending.nonzero().squeeze(1)
            xt = xa[pi] + t[pi, None] * d[pi]
            ft, gt = fg(xt, active[pi])
            ok = (ft <= fa[pi] + c1 * t[pi] * gd[pi]) & torch.isfinite(ft) & torch.isfinite(gt).all(1)
            acc = pi[ok]
            x_new[acc], f_new[acc], g_new[acc] = xt[ok], ft[ok], gt[ok]
            pending[acc] = False
            t[pi[~ok]] *= 0.5
            if not pending.any():
                break
        s = x_new - xa
        y = g_new - ga
        sy = (s * y).sum(1)
        yy = (y * y).sum(1)
        valid = (sy > 1e-12 * s.norm(dim=1) * y.norm(dim=1)) & (yy > 0) & ~pending
        slot = k % history
        S[slot, active] = s
        Y[slot, active] = y
        rho[slot, active] = torch.where(valid, 1.0 / torch.where(valid, sy, torch.ones_like(sy)),
                                        torch.zeros_like(sy))
        gamma[active] = torch.where(valid, sy / torch.where(valid, yy, torch.ones_like(yy)), gam)
        x[active], f[active], g[active] = x_new, f_new, g_new
        n_iter[active] += 1
        st = torch.zeros(len(active), dtype=torch.long)
        st[(fa - f_new) <= ftol * torch.maximum(fa.abs(), f_new.abs()).clamp_min(1e-300)] = 2
        st[g_new.abs().amax(1) <= gtol] = 1
        st[pending] = 3
        status[active] = st
        active = active[st == 0]
    status[active] = 4
    return BatchResult(x.numpy(), f.numpy(), n_iter.numpy(), status.numpy())


STRICT_OPTIONS = {"ftol": 1e-15, "gtol": 1e-13, "maxiter": 20000, "maxfun": 40000}


def scipy_minimize(spec: LawSpec, log_y: np.ndarray, delta: float, norm: float, x0: np.ndarray,
                   weights: np.ndarray | None = None, options: dict | None = None):
    """One L-BFGS-B run from ``x0`` with the analytic gradient; ``options=None`` means scipy's defaults."""
    return minimize(objective_numpy, np.asarray(x0, dtype=np.float64),
                    args=(spec, log_y, delta, norm, weights), jac=True, method="L-BFGS-B",
                    options=options)


def multistart(spec: LawSpec, log_y: np.ndarray, delta: float, norm: float, starts: np.ndarray, *,
               backend: str = "batched", tol: str = "strict", polish: int = 4):
    """Run every start and return ``(best_params, best_objective, per-start objectives, n_converged)``.

    backend "batched": all starts at once with :func:`batched_lbfgs`, then the ``polish`` best distinct
    end points refined by scipy's L-BFGS-B. backend "scipy": a plain loop of ``scipy.optimize.minimize``.
    tol "strict" asks for full convergence; tol "default" uses scipy's default tolerances (this is what
    makes a mean-reduced loss stop early), and is only meaningful with backend "scipy".
    """
    if tol not in ("strict", "default"):
        raise ValueError(f"tol must be 'strict' or 'default', got {tol!r}")
    options = STRICT_OPTIONS if tol == "strict" else None
    if backend == "scipy":
        xs = np.empty_like(starts, dtype=np.float64)
        fs = np.empty(len(starts))
        ok = 0
        for i, x0 in enumerate(starts):
            res = scipy_minimize(spec, log_y, delta, norm, x0, options=options)
            xs[i], fs[i] = res.x, res.fun
            ok += bool(res.success)
        fs = np.where(np.isfinite(fs), fs, np.inf)
        best = int(np.argmin(fs))
        return xs[best], float(fs[best]), fs, ok
    if backend != "batched":
        raise ValueError(f"backend must be 'batched' or 'scipy', got {backend!r}")
    if tol != "strict":
        raise ValueError("tol='default' reproduces scipy's stopping rule and needs backend='scipy'")
    fg = BatchedObjective(spec, log_y, delta, norm)
    res = batched_lbfgs(fg, starts)
    fs = np.where(np.isfinite(res.f), res.f, np.inf)
    order = np.argsort(fs, kind="stable")
    picked: list[np.ndarray] = []
    for i in order:
        if len(picked) >= polish or not np.isfinite(fs[i]):
            break
        if all(np.max(np.abs(res.x[i] - p)) > 1e-6 for p in picked):
            picked.append(res.x[i])
    best_x, best_f = res.x[order[0]], float(fs[order[0]])
    for p in picked:
        pol = scipy_minimize(spec, log_y, delta, norm, p, options=STRICT_OPTIONS)
        if np.isfinite(pol.fun) and pol.fun <= best_f:
            best_x, best_f = pol.x, float(pol.fun)
    return np.asarray(best_x), best_f, fs, int(np.isin(res.status, (1, 2)).sum())


def batched_bootstrap(spec: LawSpec, log_y: np.ndarray, delta: float, reduce: str, starts: np.ndarray,
                      n_boot: int, seed: int) -> np.ndarray:
    """Refit ``n_boot`` resamples (rows drawn with replacement, as integer weights) from ``starts`` each.

    All resamples x starts run as one batch; returns the best parameters per resample, ``(n_boot, P)``.
    """
    n = log_y.shape[0]
    rng = np.random.default_rng(seed)
    counts = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(n_boot)]).astype(float)
    S = len(starts)
    weights = np.repeat(counts, S, axis=0)
    x0 = np.tile(starts, (n_boot, 1))
    norm = 1.0 if reduce == "sum" else float(n)
    fg = BatchedObjective(spec, log_y, delta, norm, weights=weights)
    res = batched_lbfgs(fg, x0)
    f = np.where(np.isfinite(res.f), res.f, np.inf).reshape(n_boot, S)
    best = f.argmin(1)
    return res.x.reshape(n_boot, S, -1)[np.arange(n_boot), best]
