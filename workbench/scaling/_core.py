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
    """The same objective for a batch of parameter vectors, optionally with one weight row each.

    The fast path works in float32 without a max-shift (``log(1 + sum_k exp(a_k - e - p x_k))``): about
    five times cheaper than float64 here, and precise enough to tell basins apart, since the winners are
    polished in float64 afterwards. Rows whose fast value overflows are recomputed in float64 with the
    max-shifted log-sum-exp, so a finite objective is never reported as infinite. ``weights`` (bootstrap
    resampling counts) is ``(B, n)`` or None; each call names the batch rows it evaluates.
    """

    def __init__(self, spec: LawSpec, log_y: np.ndarray, delta: float, norm: float,
                 weights: np.ndarray | None = None, dtype: torch.dtype = torch.float32):
        self.K = len(spec.exponent_index)
        self.idx = spec.exponent_index
        self.P = spec.n_params
        self.dtype = dtype
        self.X = torch.as_tensor(spec.features, dtype=dtype)
        self.X64 = torch.as_tensor(spec.features, dtype=torch.float64)
        self.log_y = torch.as_tensor(log_y, dtype=dtype)
        self.log_y64 = torch.as_tensor(log_y, dtype=torch.float64)
        self.delta = float(delta)
        self.norm = float(norm)
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=dtype)
        self.weights64 = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        self.n_evals = 0

    def __call__(self, params: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.n_evals += params.shape[0]
        f, g = self._fast(params.to(self.dtype), rows)
        f, g = f.double(), g.double()
        bad = ~torch.isfinite(f) | ~torch.isfinite(g).all(1)
        if bad.any():
            f[bad], g[bad] = self._stable(params[bad].double(), rows[bad])
        return f, g

    def _fast(self, params, rows):
        K, X = self.K, self.X
        e = params[:, 0:1]
        z = []
        s = None
        for k in range(K):
            j = 1 + K + self.idx[k]
            zk = torch.exp(torch.addcmul(params[:, 1 + k:2 + k] - e, params[:, j:j + 1], X[k], value=-1.0))
            z.append(zk)
            s = zk + 1.0 if s is None else s.add_(zk)
        r = torch.log(s).sub_(self.log_y - e)          # log L_hat - log L
        dh = r.clamp(-self.delta, self.delta)          # Huber derivative
        h = r.sub_(dh, alpha=0.5).mul_(dh)             # Huber value
        if self.weights is not None:
            w = self.weights[rows]
            h = h.mul_(w)
            dh = dh.mul_(w)
        q = dh.div_(s)                                 # dh * d(pred)/d(e)
        g = params.new_zeros(params.shape)
        g[:, 0] = q.sum(1)
        for k in range(K):
            Gk = z[k].mul_(q)
            g[:, 1 + k] = Gk.sum(1)
            g[:, 1 + K + self.idx[k]] -= Gk @ X[k]
        return h.sum(1) / self.norm, g / self.norm

    def _stable(self, params, rows):
        K, X = self.K, self.X64
        terms = [params[:, :1].expand(-1, X.shape[1])]
        for k in range(K):
            j = 1 + K + self.idx[k]
            terms.append(params[:, 1 + k:2 + k] - params[:, j:j + 1] * X[k])
        T = torch.stack(terms)
        mx = T.amax(0)
        U = torch.exp(T - mx)
        s = U.sum(0)
        r = mx + torch.log(s) - self.log_y64
        dh = r.clamp(-self.delta, self.delta)
        h = dh * (r - 0.5 * dh)
        if self.weights64 is not None:
            w = self.weights64[rows]
            h, dh = h * w, dh * w
        G = (dh / s) * U
        g = params.new_zeros(params.shape)
        g[:, 0] = G[0].sum(1)
        for k in range(K):
            g[:, 1 + k] = G[k + 1].sum(1)
            g[:, 1 + K + self.idx[k]] -= G[k + 1] @ X[k]
        return h.sum(1) / self.norm, g / self.norm


@dataclass
class BatchResult:
    """End points of a batched run: parameters, objectives, iterations and a status code per start.

    status: 1 gradient small, 2 objective stopped decreasing, 3 line search failed, 4 iteration cap.
    """

    x: np.ndarray
    f: np.ndarray
    n_iter: np.ndarray
    status: np.ndarray


def batched_lbfgs(fg, x0: np.ndarray, *, history: int = 10, max_iter: int = 1000, gtol: float = 1e-9,
                  ftol: float = 1e-8, c1: float = 1e-4, max_backtracks: int = 40,
                  max_step: float = 10.0) -> BatchResult:
    """Minimise ``B`` independent problems at once, ``fg(x (b, P), rows) -> (f (b,), g (b, P))``.

    Each row is its own L-BFGS run: its own curvature history (newest first) and its own backtracking
    Armijo line search with quadratic interpolation. Rows advance in lockstep, one trial point each per
    call of ``fg``: a row whose trial is accepted takes a new direction, a rejected one shrinks its step.
    Rows leave the batch when they converge (gradient below ``gtol``, or a relative decrease below
    ``ftol``), when the line search fails, or after ``max_iter`` iterations.
    """
    x = torch.as_tensor(np.asarray(x0, dtype=np.float64)).clone()
    B, P = x.shape
    rows_all = torch.arange(B)
    f, g = fg(x, rows_all)
    S = x.new_zeros(B, history, P)
    Y = x.new_zeros(B, history, P)
    rho = x.new_zeros(B, history)
    gamma = x.new_zeros(B)                 # 0 = no curvature information yet
    n_iter = torch.zeros(B, dtype=torch.long)
    n_back = torch.zeros(B, dtype=torch.long)
    status = torch.zeros(B, dtype=torch.long)
    d = -g
    gd = (g * d).sum(1)
    t = x.new_ones(B)

    def first_step(rows, dd, have):
        tt = torch.where(have, torch.ones(len(rows), dtype=x.dtype), 1.0 / dd.norm(dim=1).clamp_min(1e-300))
        return torch.minimum(tt, max_step / dd.abs().amax(1).clamp_min(1e-300))

    t[:] = first_step(rows_all, d, torch.zeros(B, dtype=torch.bool))
    status[~torch.isfinite(f)] = 3
    status[torch.isfinite(f) & (g.abs().amax(1) <= gtol)] = 1
    active = rows_all[status == 0]
    while active.numel():
        xa, fa, ga = x[active], f[active], g[active]
        ta, da, gda = t[active], d[active], gd[active]
        xt = xa + ta[:, None] * da
        ft, gt = fg(xt, active)
        ok = (ft <= fa + c1 * ta * gda) & torch.isfinite(ft) & torch.isfinite(gt).all(1)
        # rejected trials: shrink the step to the minimiser of the quadratic through f(0), f'(0), f(t),
        # kept within [1e-3 t, 0.5 t]; give up after max_backtracks
        rej = active[~ok]
        if rej.numel():
            t_r, gd_r = ta[~ok], gda[~ok]
            curv = ft[~ok] - fa[~ok] - gd_r * t_r
            t_q = -gd_r * t_r * t_r / (2.0 * curv)
            t_q = torch.where(torch.isfinite(t_q) & (curv > 0), t_q, 0.5 * t_r)
            t[rej] = torch.minimum(torch.maximum(t_q, 1e-3 * t_r), 0.5 * t_r)
            n_back[rej] += 1
            status[rej[n_back[rej] > max_backtracks]] = 3
        acc = active[ok]
        if acc.numel():
            x_new, f_new, g_new = xt[ok], ft[ok], gt[ok]
            s_ = x_new - xa[ok]
            y_ = g_new - ga[ok]
            sy = (s_ * y_).sum(1)
            yy = (y_ * y_).sum(1)
            valid = (sy > 1e-10 * s_.norm(dim=1) * y_.norm(dim=1)) & (yy > 0)
            upd = acc[valid]
            if upd.numel():
                S[upd] = torch.cat([s_[valid, None], S[upd, :-1]], 1)
                Y[upd] = torch.cat([y_[valid, None], Y[upd, :-1]], 1)
                rho[upd] = torch.cat([(1.0 / sy[valid])[:, None], rho[upd, :-1]], 1)
                gamma[upd] = sy[valid] / yy[valid]
            f_old = fa[ok]
            x[acc], f[acc], g[acc] = x_new, f_new, g_new
            n_iter[acc] += 1
            n_back[acc] = 0
            st = torch.zeros(len(acc), dtype=torch.long)
            st[(f_old - f_new) <= ftol * torch.maximum(f_old.abs(), f_new.abs()).clamp_min(1e-300)] = 2
            st[g_new.abs().amax(1) <= gtol] = 1
            st[(st == 0) & (n_iter[acc] >= max_iter)] = 4
            status[acc] = st
            go = acc[st == 0]
            if go.numel():
                # two-loop recursion over each row's own history (empty slots have rho = 0: no-ops)
                q = -g[go]
                Sg, Yg, rg = S[go], Y[go], rho[go]
                coef = []
                for j in range(history):
                    a_j = rg[:, j] * (Sg[:, j] * q).sum(1)
                    q = q - a_j[:, None] * Yg[:, j]
                    coef.append(a_j)
                gam = gamma[go]
                have = gam > 0
                q = torch.where(have[:, None], gam[:, None] * q, q)
                for j in reversed(range(history)):
                    b_j = rg[:, j] * (Yg[:, j] * q).sum(1)
                    q = q + (coef[j] - b_j)[:, None] * Sg[:, j]
                gg = g[go]
                gdn = (gg * q).sum(1)
                reset = ~(gdn < 0) | ~torch.isfinite(gdn)
                if reset.any():
                    q[reset] = -gg[reset]
                    gdn = (gg * q).sum(1)
                    have = have & ~reset
                d[go] = q
                gd[go] = gdn
                t[go] = first_step(go, q, have)
        active = active[status[active] == 0]
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
    best_x, best_f = res.x[order[0]], np.inf
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
