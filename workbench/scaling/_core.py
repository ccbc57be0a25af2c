"""The machinery under every fit: a log-sum-exp law, its Huber objective, and a batched L-BFGS over starts.

A law here is ``log L_hat = logsumexp(e, a_1 - p_{j(1)} x_1, ..., a_K - p_{j(K)} x_K)`` where the ``x_k`` are
log-features (``log N``, ``log D``, ...) and term ``k`` uses exponent ``j(k)``. Chinchilla's law is
``E + A/N^alpha + B/D^beta``: terms ``(log N, alpha)`` and ``(log D, beta)``. Parameters are stored as
``[e, a_1..a_K, p_1..p_J]`` (``E = exp(e)``, ``A_k = exp(a_k)``), which keeps every coefficient positive and
the objective smooth. The objective is the (weighted) sum, or mean, of Huber(delta) losses of the log
residuals ``log L_hat - log L``.

Every start of a grid is an independent L-BFGS problem. Running thousands of them one at a time costs
mostly interpreter overhead, so :func:`batched_lbfgs` advances all of them together: each start keeps its
own curvature history and its own backtracking line search, and only the arithmetic is shared (one numpy
operation over starts x points, in float32). Neither scipy nor torch offers this: their L-BFGS
minimises one objective, and summing the starts into one would couple them through a shared history and
line search. This batched stage screens the starts; the best few distinct end points are then polished
with :func:`scipy.optimize.minimize` (L-BFGS-B, float64), so the reported optimum is the one scipy
certifies.

Lesson: ``notebooks/04_scaling_laws.ipynb`` (1. The Chinchilla replay).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from ._blas import single_blas_thread
from .errors import ScalingError


@dataclass(frozen=True)
class LawSpec:
    """Structure of a log-sum-exp law: log-features ``(K, n)`` and the exponent index of each term."""

    features: np.ndarray      # (K, n) log-features
    exponent_index: tuple     # length K, values in range(J)
    n_exponents: int          # J

    @property
    def n_params(self) -> int:
        return 1 + len(self.exponent_index) + self.n_exponents


def huber_inplace(r: np.ndarray, delta: float) -> np.ndarray:
    """Huber loss of the residuals ``r``, written into ``r``; returns its derivative ``clip(r, -delta, delta)``.

    The loss is ``d (r - d / 2)`` with ``d = clip(r, -delta, delta)``: ``r^2 / 2`` within ``delta`` of zero,
    linear (slope ``delta``) outside. The one place the loss is written; every objective here calls it.

    >>> r = np.array([0.0005, -0.002])
    >>> huber_inplace(r, 1e-3), r
    (array([ 0.0005, -0.001 ]), array([1.25e-07, 1.50e-06]))
    """
    dh = np.clip(r, -delta, delta)
    r -= 0.5 * dh
    r *= dh
    return dh


def huber(r: np.ndarray, delta: float) -> np.ndarray:
    """Huber loss: quadratic within ``delta`` of zero, linear (slope ``delta``) outside."""
    h = np.array(r, dtype=np.result_type(r, 0.5))  # a float copy (float32 stays float32)
    huber_inplace(h, delta)
    return h if h.ndim else h[()]


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
    h = mx + np.log(s) - log_y                          # the residual, then its Huber loss
    dh = huber_inplace(h, delta)
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

    The fast path works in float32 without a max-shift (``log(1 + sum_k exp(a_k - e - p x_k))``): several
    times cheaper than float64, and precise enough to tell basins apart, since the winners are polished
    in float64 afterwards. Rows whose fast value overflows are recomputed in float64 with the max-shifted
    log-sum-exp, so a finite objective is never reported as infinite. ``weights`` (bootstrap resampling
    counts) is ``(B, n)`` or None; each call names the batch rows it evaluates.
    """

    CHUNK_POINTS = 131072

    def __init__(self, spec: LawSpec, log_y: np.ndarray, delta: float, norm: float,
                 weights: np.ndarray | None = None, dtype=np.float32):
        self.K = len(spec.exponent_index)
        self.idx = spec.exponent_index
        self.P = spec.n_params
        self.dtype = dtype
        self.X = np.ascontiguousarray(spec.features, dtype=dtype)
        self.X64 = np.asarray(spec.features, dtype=np.float64)
        self.log_y = np.asarray(log_y, dtype=dtype)
        self.log_y64 = np.asarray(log_y, dtype=np.float64)
        self.delta = float(delta)
        self.norm = float(norm)
        self.weights = None if weights is None else np.asarray(weights, dtype=dtype)
        self.weights64 = None if weights is None else np.asarray(weights, dtype=np.float64)
        self.n_evals = 0

    def __call__(self, params: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.n_evals += params.shape[0]
        p32 = params.astype(self.dtype)
        f = np.empty(params.shape[0])
        g = np.empty(params.shape)
        # rows in chunks of about 128k points: the temporaries stay in cache, which is several times
        # faster than one pass over the whole batch, more so on a busy machine
        step = max(1, self.CHUNK_POINTS // self.X.shape[1])
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for i in range(0, params.shape[0], step):
                f[i:i + step], g[i:i + step] = self._fast(p32[i:i + step], rows[i:i + step])
        bad = ~np.isfinite(f) | ~np.isfinite(g).all(1)
        if bad.any():
            f[bad], g[bad] = self._stable(params[bad], rows[bad])
        return f, g

    def _fast(self, params, rows):
        K, X, dt = self.K, self.X, self.dtype
        e = params[:, 0:1]
        s = np.ones((params.shape[0], X.shape[1]), dtype=dt)
        z = []
        for k in range(K):
            j = 1 + K + self.idx[k]
            zk = X[k] * (-params[:, j:j + 1])
            zk += params[:, 1 + k:2 + k] - e
            np.exp(zk, out=zk)
            s += zk
            z.append(zk)
        r = np.log(s)
        r += e
        r -= self.log_y                                  # log L_hat - log L
        dh = huber_inplace(r, self.delta)                # r becomes the Huber value, dh its derivative
        if self.weights is not None:
            w = self.weights[rows]
            r *= w
            dh *= w
        dh /= s                                          # dh * d(log L_hat)/d(e)
        g = np.zeros(params.shape, dtype=np.float64)
        g[:, 0] = dh.sum(1)
        for k in range(K):
            zk = z[k]
            zk *= dh
            g[:, 1 + k] = zk.sum(1)
            g[:, 1 + K + self.idx[k]] -= zk @ X[k]
        return r.sum(1, dtype=np.float64) / self.norm, g / self.norm

    def _stable(self, params, rows):
        K, X = self.K, self.X64
        params = np.asarray(params, dtype=np.float64)
        T = np.empty((K + 1, params.shape[0], X.shape[1]))
        T[0] = params[:, :1]
        for k in range(K):
            j = 1 + K + self.idx[k]
            T[k + 1] = params[:, 1 + k:2 + k] - params[:, j:j + 1] * X[k]
        with np.errstate(over="ignore", invalid="ignore"):
            mx = T.max(0)
            U = np.exp(T - mx)
            s = U.sum(0)
            h = mx + np.log(s) - self.log_y64            # the residual, then its Huber loss
            dh = huber_inplace(h, self.delta)
            if self.weights64 is not None:
                w = self.weights64[rows]
                h, dh = h * w, dh * w
            G = (dh / s) * U
        g = np.zeros(params.shape)
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


def batched_lbfgs(fg, x0: np.ndarray, *, history: int = 10, max_iter: int = 400, gtol: float = 1e-9,
                  ftol: float = 2e-6, c1: float = 1e-4, max_backtracks: int = 40,
                  max_step: float = 10.0) -> BatchResult:
    """Minimise ``B`` independent problems at once, ``fg(x (b, P), rows) -> (f (b,), g (b, P))``.

    Each row is its own L-BFGS run: its own curvature history (newest first) and its own backtracking
    Armijo line search with quadratic interpolation. Rows advance in lockstep, one trial point each per
    call of ``fg``: a row whose trial is accepted takes a new direction, a rejected one shrinks its step.
    Rows leave the batch when they converge (gradient below ``gtol``, or a decrease below ``ftol``
    relative to the objective: about where scipy's default L-BFGS-B stops on a summed Huber loss, and
    scale-free, so a mean-reduced loss is treated the same), when the line search fails, or after
    ``max_iter`` iterations. Callers polish the best end points; this is the screening stage.
    """
    x = np.array(x0, dtype=np.float64)
    B, P = x.shape
    rows_all = np.arange(B)
    f, g = fg(x, rows_all)
    S = np.zeros((B, history, P))
    Y = np.zeros((B, history, P))
    rho = np.zeros((B, history))
    gamma = np.zeros(B)                    # 0 = no curvature information yet
    n_iter = np.zeros(B, dtype=np.int64)
    n_back = np.zeros(B, dtype=np.int64)
    status = np.zeros(B, dtype=np.int64)
    d = -g
    gd = (g * d).sum(1)

    def first_step(dd, have):
        with np.errstate(divide="ignore"):
            tt = np.where(have, 1.0, 1.0 / np.maximum(np.linalg.norm(dd, axis=1), 1e-300))
        return np.minimum(tt, max_step / np.maximum(np.abs(dd).max(1), 1e-300))

    t = first_step(d, np.zeros(B, dtype=bool))
    status[~np.isfinite(f)] = 3
    status[np.isfinite(f) & (np.abs(g).max(1) <= gtol)] = 1
    active = rows_all[status == 0]
    while active.size:
        xa, fa, ga = x[active], f[active], g[active]
        ta, da, gda = t[active], d[active], gd[active]
        xt = xa + ta[:, None] * da
        ft, gt = fg(xt, active)
        with np.errstate(invalid="ignore"):
            ok = (ft <= fa + c1 * ta * gda) & np.isfinite(ft) & np.isfinite(gt).all(1)
        # rejected trials: shrink the step to the minimiser of the quadratic through f(0), f'(0), f(t),
        # kept within [1e-3 t, 0.5 t]; give up after max_backtracks
        nok = ~ok
        if nok.any():
            rej = active[nok]
            t_r, gd_r = ta[nok], gda[nok]
            with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
                curv = ft[nok] - fa[nok] - gd_r * t_r
                t_q = -gd_r * t_r * t_r / (2.0 * curv)
                t_q = np.where(np.isfinite(t_q) & (curv > 0), t_q, 0.5 * t_r)
            t[rej] = np.minimum(np.maximum(t_q, 1e-3 * t_r), 0.5 * t_r)
            n_back[rej] += 1
            status[rej[n_back[rej] > max_backtracks]] = 3
        if ok.any():
            acc = active[ok]
            x_new, f_new, g_new = xt[ok], ft[ok], gt[ok]
            s_ = x_new - xa[ok]
            y_ = g_new - ga[ok]
            sy = (s_ * y_).sum(1)
            yy = (y_ * y_).sum(1)
            valid = (sy > 1e-10 * np.linalg.norm(s_, axis=1) * np.linalg.norm(y_, axis=1)) & (yy > 0)
            if valid.any():
                upd = acc[valid]
                S[upd, 1:] = S[upd, :-1]
                S[upd, 0] = s_[valid]
                Y[upd, 1:] = Y[upd, :-1]
                Y[upd, 0] = y_[valid]
                rho[upd, 1:] = rho[upd, :-1]
                rho[upd, 0] = 1.0 / sy[valid]
                gamma[upd] = sy[valid] / yy[valid]
            f_old = fa[ok]
            x[acc], f[acc], g[acc] = x_new, f_new, g_new
            n_iter[acc] += 1
            n_back[acc] = 0
            st = np.zeros(acc.size, dtype=np.int64)
            st[(f_old - f_new) <= ftol * np.maximum(np.maximum(np.abs(f_old), np.abs(f_new)), 1e-300)] = 2
            st[np.abs(g_new).max(1) <= gtol] = 1
            st[(st == 0) & (n_iter[acc] >= max_iter)] = 4
            status[acc] = st
            go = acc[st == 0]
            if go.size:
                # two-loop recursion over each row's own history (empty slots have rho = 0: no-ops)
                gg = g_new[st == 0]
                q = -gg
                Sg, Yg, rg = S[go], Y[go], rho[go]
                coef = []
                for j in range(history):
                    a_j = rg[:, j] * (Sg[:, j] * q).sum(1)
                    q -= a_j[:, None] * Yg[:, j]
                    coef.append(a_j)
                gam = gamma[go]
                have = gam > 0
                q = np.where(have[:, None], gam[:, None] * q, q)
                for j in reversed(range(history)):
                    b_j = rg[:, j] * (Yg[:, j] * q).sum(1)
                    q += (coef[j] - b_j)[:, None] * Sg[:, j]
                gdn = (gg * q).sum(1)
                reset = ~(gdn < 0) | ~np.isfinite(gdn)
                if reset.any():
                    q[reset] = -gg[reset]
                    gdn = (gg * q).sum(1)
                    have = have & ~reset
                d[go] = q
                gd[go] = gdn
                t[go] = first_step(q, have)
        active = active[status[active] == 0]
    return BatchResult(x, f, n_iter, status)


STRICT_OPTIONS = {"ftol": 1e-15, "gtol": 1e-13, "maxiter": 20000, "maxfun": 40000}
#: Polishing a batched end point (already near a minimum) on the summed objective: converged to ~1e-11
#: relative in the objective without the thousands of line-search evaluations STRICT_OPTIONS can cost.
POLISH_OPTIONS = {"ftol": 1e-14, "gtol": 1e-10, "maxiter": 5000, "maxfun": 20000}


def scipy_minimize(spec: LawSpec, log_y: np.ndarray, delta: float, norm: float, x0: np.ndarray,
                   weights: np.ndarray | None = None, options: dict | None = None):
    """One L-BFGS-B run from ``x0`` with the analytic gradient; ``options=None`` means scipy's defaults."""
    with single_blas_thread():   # see _blas: a threaded BLAS makes each 5-parameter iteration ~40x slower
        return minimize(objective_numpy, np.asarray(x0, dtype=np.float64),
                        args=(spec, log_y, delta, norm, weights), jac=True, method="L-BFGS-B",
                        options=options)


@dataclass
class MultistartResult:
    """Best parameters and objective over all starts, each start's end objective, and the polished
    distinct candidates (best first) that bootstrap refits start from."""

    x: np.ndarray
    objective: float
    start_objectives: np.ndarray
    n_converged: int
    candidates: np.ndarray


def multistart(spec: LawSpec, log_y: np.ndarray, delta: float, norm: float, starts: np.ndarray, *,
               backend: str = "batched", tol: str = "strict", polish: int = 4) -> MultistartResult:
    """Run every start and keep the best end point.

    backend "batched": all starts at once with :func:`batched_lbfgs`, then the ``polish`` best distinct
    end points refined by scipy's L-BFGS-B in float64. backend "scipy": a plain loop of
    ``scipy.optimize.minimize`` (L-BFGS-B), one start at a time. tol "strict" asks for full convergence;
    tol "default" keeps scipy's default tolerances, which is what lets a mean-reduced loss stop early;
    it needs backend "scipy".
    """
    if tol not in ("strict", "default"):
        raise ScalingError(f"tol must be 'strict' or 'default', got {tol!r}")
    starts = np.asarray(starts, dtype=np.float64)
    if backend == "scipy":
        options = STRICT_OPTIONS if tol == "strict" else None
        xs = np.empty_like(starts)
        fs = np.empty(len(starts))
        ok = 0
        with single_blas_thread():
            for i, x0 in enumerate(starts):
                res = scipy_minimize(spec, log_y, delta, norm, x0, options=options)
                xs[i], fs[i] = res.x, res.fun
                ok += bool(res.success)
        fs = np.where(np.isfinite(fs), fs, np.inf)
        order = np.argsort(fs, kind="stable")
        return MultistartResult(xs[order[0]].copy(), float(fs[order[0]]), fs, ok, _distinct(xs[order], polish))
    if backend != "batched":
        raise ScalingError(f"backend must be 'batched' or 'scipy', got {backend!r}")
    if tol != "strict":
        raise ScalingError("tol='default' reproduces scipy's stopping rule and needs backend='scipy'")
    res = batched_lbfgs(BatchedObjective(spec, log_y, delta, norm), starts)
    fs = np.where(np.isfinite(res.f), res.f, np.inf)
    order = np.argsort(fs, kind="stable")
    picked = _distinct(res.x[order[np.isfinite(fs[order])]], polish)
    polished = []
    for p in picked:
        # polish the summed objective whatever ``reduce`` is: same minimiser, and scipy's stopping rule is
        # not scale-free (that is the averaging trap)
        pol = scipy_minimize(spec, log_y, delta, 1.0, p, options=POLISH_OPTIONS)
        if np.isfinite(pol.fun):
            polished.append((float(pol.fun) / norm, pol.x))
    if not polished:
        raise ScalingError("no start reached a finite objective; check the data's scale")
    polished.sort(key=lambda fx: fx[0])
    return MultistartResult(np.asarray(polished[0][1]), polished[0][0], fs,
                            int(np.isin(res.status, (1, 2)).sum()), np.stack([p for _, p in polished]))


def _distinct(xs: np.ndarray, k: int, tol: float = 1e-3) -> np.ndarray:
    """The first ``k`` rows of ``xs`` (already sorted best first) that differ from each other."""
    picked: list[np.ndarray] = []
    for x in xs:
        if len(picked) >= k:
            break
        if np.all(np.isfinite(x)) and all(np.max(np.abs(x - p)) > tol for p in picked):
            picked.append(x)
    return np.stack(picked) if picked else np.empty((0, xs.shape[1]))


def bootstrap_rows(n: int, n_boot: int, seed: int) -> np.ndarray:
    """Row indices of ``n_boot`` resamples of ``n`` rows drawn with replacement, ``(n_boot, n)``.

    Every bootstrap in this package draws its resamples here, so a resample can be refitted by hand:
    ``fit_chinchilla(N[rows[i]], D[rows[i]], loss[rows[i]], <same choices>)``.
    """
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, n, n) for _ in range(int(n_boot))]) if n_boot else np.empty((0, n), int)


def multistart_bootstrap(spec: LawSpec, log_y: np.ndarray, delta: float, reduce: str, starts: np.ndarray,
                         rows: np.ndarray, *, backend: str, tol: str, progress=None) -> np.ndarray:
    """Refit each resample ``rows[i]`` exactly as the fit was made: the same starts, objective and optimiser
    with the same stopping rule (:func:`multistart` on the resampled rows). Needed whenever the stopping rule
    decides where a fit ends (scipy's default tolerances stop a mean-reduced loss early, at a point that
    depends on the path), so a refit from anywhere else would describe a different procedure.
    ``progress(done, total)`` is called after each refit. Returns ``(n_boot, P)``.
    """
    out = []
    with single_blas_thread():
        for i, r in enumerate(rows):
            sub = LawSpec(np.stack([f[r] for f in spec.features]), spec.exponent_index, spec.n_exponents)
            norm = 1.0 if reduce == "sum" else float(len(r))
            out.append(multistart(sub, log_y[r], delta, norm, starts, backend=backend, tol=tol).x)
            if progress is not None:
                progress(i + 1, len(rows))
    return np.stack(out) if out else np.empty((0, spec.n_params))


def batched_bootstrap(spec: LawSpec, log_y: np.ndarray, delta: float, reduce: str, starts: np.ndarray,
                      rows: np.ndarray) -> np.ndarray:
    """Refit each resample ``rows[i]`` (as integer weights) to convergence from ``starts`` (the fit's polished
    end points): the optimum a strict multistart of the resample reaches, since a converged fit does not
    depend on where it started (tested against refitting resamples by hand).

    All resamples x starts run as one batch; returns the best parameters per resample, ``(n_boot, P)``.
    """
    n = log_y.shape[0]
    n_boot = len(rows)
    counts = np.stack([np.bincount(r, minlength=n) for r in rows]).astype(float)
    S = len(starts)
    weights = np.repeat(counts, S, axis=0)
    x0 = np.tile(starts, (n_boot, 1))
    norm = 1.0 if reduce == "sum" else float(n)
    # float64 and tight tolerances: the refits start at the full-data optimum, so a loose stopping rule
    # would leave them there and shrink the intervals to nothing
    fg = BatchedObjective(spec, log_y, delta, norm, weights=weights, dtype=np.float64)
    res = batched_lbfgs(fg, x0, ftol=1e-12, gtol=1e-12, max_iter=2000)
    f = np.where(np.isfinite(res.f), res.f, np.inf).reshape(n_boot, S)
    best = f.argmin(1)
    return res.x.reshape(n_boot, S, -1)[np.arange(n_boot), best]
