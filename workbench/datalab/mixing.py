"""Data mixing laws: predict a model's loss on each validation domain from the proportions of its training mix.

Claim (Ye et al. 2024, "Data Mixing Laws"): at fixed model size and training tokens, the validation loss on
domain i follows ``L_i(r) = c_i + k_i * exp(sum_j t_ij * r_j)`` in the mixture proportions ``r`` (on the
simplex), so a few small runs fit the law, predict unseen mixtures, and give the mixture that minimises a target
combination of domain losses. Here: two domains (``python-docs`` prose, ``python-code`` source), the micro model
trained on mixtures at several docs proportions, the law fitted per validation domain on some of them and
checked on held-out proportions. Since ``sum_j r_j = 1``, ``exp(t . r)`` only determines the differences of the
``t_j``: the fit fixes the last domain's ``t`` at 0 (a reparameterisation, not a restriction).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import DataLabError
from .recipes import chunk, corpus_split, mean_and_spread, micro_model, read_sweep_file

#: Training domains of the shipped experiment: (label, embedded corpus).
DOMAINS = (("docs", "python-docs"), ("code", "python-code"))
CHUNK = 256


class ProportionError(DataLabError):
    """Mixture proportions that are not a point of the simplex: wrong length, negative, or not summing to 1."""


def check_proportions(r, n_domains: int | None = None, tol: float = 1e-6) -> np.ndarray:
    """``r`` as a float array ``(..., J)`` after checking every row is non-negative and sums to 1 (within
    ``tol``); ``n_domains`` checks J."""
    a = np.asarray(r, dtype=float)
    if a.ndim == 0 or a.shape[-1] < 1:
        raise ProportionError(f"proportions must have one entry per domain, got {r!r}")
    if n_domains is not None and a.shape[-1] != n_domains:
        raise ProportionError(f"proportions have {a.shape[-1]} entries for {n_domains} domains")
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise ProportionError(f"proportions must be finite and >= 0, got {a.tolist()}")
    sums = a.sum(-1)
    if np.any(np.abs(sums - 1.0) > tol):
        raise ProportionError(f"proportions must sum to 1, got sums {np.round(np.atleast_1d(sums), 6).tolist()} "
                              f"for {a.tolist()}")
    return a


def chunk_counts(r, n_chunks: int) -> np.ndarray:
    """How many of ``n_chunks`` chunks each domain gets: ``r * n_chunks`` rounded by largest remainder, so the
    counts sum to ``n_chunks`` exactly."""
    r = check_proportions(r)
    raw = r * n_chunks
    counts = np.floor(raw).astype(int)
    rest = n_chunks - counts.sum()
    counts[np.argsort(-(raw - counts), kind="stable")[:rest]] += 1
    return counts


def mix_domains(domain_ids, proportions, total_tokens: int, chunk_len: int = CHUNK, seed: int = 0) -> np.ndarray:
    """A training stream of about ``total_tokens`` ids mixing the domains in ``proportions``.

    domain_ids: one 1-D id array per domain. Each domain gives its share of ``chunk_len``-token chunks (drawn
    without replacement from that seed; :func:`chunk_counts`), and the chunks are shuffled together.
    """
    r = check_proportions(proportions, len(domain_ids))
    n = max(1, total_tokens // chunk_len)
    counts = chunk_counts(r, n)
    rng = np.random.default_rng(seed)
    parts = []
    for ids, k in zip(domain_ids, counts):
        c = chunk(ids, chunk_len)
        if k > len(c):
            raise DataLabError(f"a domain has {len(c)} chunks of {chunk_len}, the mix asks for {k}")
        parts.append(c[rng.choice(len(c), size=k, replace=False)])
    allc = np.concatenate(parts)
    return allc[rng.permutation(len(allc))].reshape(-1)


def mixing_law(r, c: float, k: float, t) -> np.ndarray:
    """``c + k * exp(r @ t)`` for proportions ``r`` of shape ``(n, J)`` (or ``(J,)``) and ``t`` of shape ``(J,)``."""
    return c + k * np.exp(np.asarray(r, dtype=float) @ np.asarray(t, dtype=float))


@dataclass
class MixingLawFit:
    """``L(r) = c + k * exp(t . r)`` for one validation domain (``t[-1] = 0``); ``rmse`` on the fitted points."""

    c: float
    k: float
    t: np.ndarray
    rmse: float

    def predict(self, r) -> np.ndarray:
        return mixing_law(r, self.c, self.k, self.t)


def fit_mixing_law(r, loss, starts=(-4.0, -1.0, -0.3, 0.3, 1.0, 4.0)) -> MixingLawFit:
    """Least-squares fit (scipy ``least_squares``) of the mixing law to losses at proportions ``r`` ``(n, J)``.

    Free parameters ``c``, ``k`` and ``t_1..t_{J-1}`` (``t_J = 0``); each free ``t`` starts from every value of
    ``starts`` and the best fit wins. Needs at least ``J + 2`` points (one more than parameters).
    """
    from scipy.optimize import least_squares

    R = check_proportions(r)
    y = np.asarray(loss, dtype=float)
    if R.ndim != 2 or y.shape != (len(R),):
        raise DataLabError(f"need proportions (n, J) and losses (n,), got {R.shape} and {y.shape}")
    J = R.shape[1]
    if len(y) < J + 2:
        raise DataLabError(f"{len(y)} points cannot fit {J + 1} parameters with a residual; give at least {J + 2}")

    def model(p):
        return p[0] + p[1] * np.exp(R[:, :-1] @ p[2:])

    best = None
    grids = np.array(np.meshgrid(*[starts] * (J - 1))).reshape(J - 1, -1).T if J > 1 else np.zeros((1, 0))
    for t0 in grids:
        e = np.exp(R[:, :-1] @ t0)
        A = np.stack([np.ones_like(e), e], 1)              # c, k linear given t: start from their LS solution
        ck = np.linalg.lstsq(A, y, rcond=None)[0]
        sol = least_squares(lambda p: model(p) - y, np.concatenate([ck, t0]), method="lm", max_nfev=4000)
        if best is None or sol.cost < best.cost:
            best = sol
    p = best.x
    return MixingLawFit(c=float(p[0]), k=float(p[1]), t=np.concatenate([p[2:], [0.0]]),
                        rmse=float(np.sqrt(np.mean((model(p) - y) ** 2))))


def optimal_mixture(fits, weights) -> tuple[np.ndarray, float]:
    """The proportions minimising ``sum_i weights[i] * fits[i].predict(r)`` over the simplex, and that value.

    Two domains: a dense grid refined by a bounded scalar search. More: SLSQP from every vertex and the centre.
    """
    from scipy.optimize import minimize, minimize_scalar

    w = np.asarray(weights, dtype=float)
    if len(w) != len(fits) or np.any(w < 0) or w.sum() <= 0:
        raise DataLabError(f"need one non-negative weight per fitted domain (not all 0), got {w.tolist()}")
    J = len(fits[0].t)

    def target(r):
        return float(sum(wi * f.predict(np.asarray(r)[None])[0] for wi, f in zip(w, fits)))

    if J == 2:
        g = np.linspace(0, 1, 2001)
        vals = [target([a, 1 - a]) for a in g]
        i = int(np.argmin(vals))
        sol = minimize_scalar(lambda a: target([a, 1 - a]), bounds=(g[max(0, i - 1)], g[min(len(g) - 1, i + 1)]),
                              method="bounded", options={"xatol": 1e-9})
        a = sol.x if sol.fun <= vals[i] else g[i]
        r = np.array([a, 1 - a])
        return r, target(r)
    best = None
    for x0 in list(np.eye(J)) + [np.full(J, 1 / J)]:
        sol = minimize(target, x0, method="SLSQP", bounds=[(0, 1)] * J,
                       constraints=[{"type": "eq", "fun": lambda r: r.sum() - 1}])
        if best is None or sol.fun < best.fun:
            best = sol
    r = np.clip(best.x, 0, None)
    r = r / r.sum()
    return r, target(r)


def mixing_run(settings, *, proportions, pool_tokens: int = 300_000, progress=None, should_stop=None) -> dict:
    """One run: the micro model on a ``DOMAINS`` mixture at ``proportions``, validated on each domain's
    held-out split."""
    from .distill import train_student

    splits = [corpus_split(name) for _, name in DOMAINS]
    data = mix_domains([s[0] for s in splits], proportions, pool_tokens, seed=settings.seed)
    model = micro_model(settings.config, settings.seed)
    h = train_student(model, data, settings.steps, settings.batch_size, settings.lr,
                      val_sets={lab: s[1] for (lab, _), s in zip(DOMAINS, splits)}, seed=settings.seed,
                      progress=progress, should_stop=should_stop)
    val = [h.val_loss[lab] for lab, _ in DOMAINS]
    return {"steps": h.steps, "train_loss": h.train_loss, "domain_loss": val,
            "val_loss": list(np.mean(val, 0)), "cpu_s": h.cpu_s, "stopped": h.stopped}


@dataclass
class MixingResult:
    """Mixing-law experiment: measured and predicted validation losses (nats/byte) per domain.

    domains: labels ``(J,)``; proportions: ``(n, J)``; heldout: ``(n,)`` True where the law was not fitted;
    seeds; steps; curves: ``(n, seeds, len(steps), J)``; loss: final ``(n, seeds, J)``; mean, sd: ``(n, J)``;
    fits: one :class:`MixingLawFit` per domain; predicted: ``(n, J)``; error: predicted minus mean measured
    ``(n, J)``; heldout_mae: mean absolute error on held-out points per domain ``(J,)``; target_weights ``(J,)``;
    optimum: the proportions minimising the weighted target ``(J,)`` and optimum_loss (predicted); grid: a docs
    proportion axis and grid_loss ``(len(grid), J)``, the laws along it (two domains).
    """

    domains: list
    proportions: np.ndarray
    heldout: np.ndarray
    seeds: list
    steps: np.ndarray
    curves: np.ndarray
    loss: np.ndarray
    mean: np.ndarray
    sd: np.ndarray
    fits: list
    predicted: np.ndarray
    error: np.ndarray
    heldout_mae: np.ndarray
    target_weights: np.ndarray
    optimum: np.ndarray
    optimum_loss: float
    grid: np.ndarray = field(default_factory=lambda: np.zeros(0))
    grid_loss: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    stopped: bool = False


def mixing_from_runs(runs: list, heldout_props, target_weights=(0.5, 0.5)) -> MixingResult:
    """Fit the law per domain on the runs whose proportions are not in ``heldout_props`` and assemble a
    :class:`MixingResult`. runs: dicts with ``proportions``, ``seed``, ``steps``, ``domain_loss``
    (``(J, len(steps))``)."""
    props, seeds, table = [], [], {}
    for r in runs:
        p = tuple(round(float(x), 9) for x in check_proportions(r["proportions"]))
        props += [p] if p not in props else []
        seeds += [r["seed"]] if r["seed"] not in seeds else []
        table[(p, r["seed"])] = r
    missing = [(p, s) for p in props for s in seeds if (p, s) not in table]
    if missing:
        raise DataLabError(f"mixing runs missing for (proportions, seed) {missing}")
    held = {tuple(round(float(x), 9) for x in check_proportions(h)) for h in heldout_props}
    P = np.array(props)
    heldout = np.array([p in held for p in props])
    J = P.shape[1]
    if (~heldout).sum() < J + 2:
        raise DataLabError(f"only {(~heldout).sum()} fitted proportions; need at least {J + 2}")
    curves = np.array([[np.asarray(table[(p, s)]["domain_loss"], dtype=float).T for s in seeds] for p in props])
    loss = curves[:, :, -1, :]                                          # (n, seeds, J)
    mean, sd = mean_and_spread(loss)
    fits = [fit_mixing_law(P[~heldout], mean[~heldout, j]) for j in range(J)]
    pred = np.stack([f.predict(P) for f in fits], 1)
    err = pred - mean
    w = np.asarray(target_weights, dtype=float)
    opt, opt_loss = optimal_mixture(fits, w)
    grid = np.linspace(0, 1, 101) if J == 2 else np.zeros(0)
    grid_loss = np.stack([f.predict(np.stack([grid, 1 - grid], 1)) for f in fits], 1) if J == 2 else np.zeros((0, J))
    return MixingResult(domains=[d for d, _ in DOMAINS][:J], proportions=P, heldout=heldout, seeds=seeds,
                        steps=np.asarray(table[(props[0], seeds[0])]["steps"]), curves=curves, loss=loss,
                        mean=mean, sd=sd, fits=fits, predicted=pred, error=err,
                        heldout_mae=np.abs(err[heldout]).mean(0) if heldout.any() else np.full(J, np.nan),
                        target_weights=w, optimum=opt, optimum_loss=opt_loss, grid=grid, grid_loss=grid_loss)


#: Docs proportions of the shipped sweep: fitted, then held out.
FIT_DOCS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
HELDOUT_DOCS = (0.1, 0.5, 0.9)


def run_mixing(fit_docs=(0.0, 0.25, 0.5, 0.75, 1.0), heldout_docs=(0.4,), seeds=(0,), steps: int = 60,
               batch_size: int = 16, lr: float = 3e-3, pool_tokens: int = 100_000, target_weights=(0.5, 0.5),
               progress=None, should_stop=None) -> MixingResult:
    """A live run (seconds): the micro model at each docs proportion (code gets the rest), the law fitted on
    ``fit_docs`` and checked on ``heldout_docs``. progress: ``progress(done_steps, total_steps)``;
    should_stop: a callable (the finished proportions are fitted if enough, else :class:`DataLabError`)."""
    from .recipes import MICRO_CONFIG, RunSettings

    docs = list(fit_docs) + list(heldout_docs)
    for a in docs:
        check_proportions([a, 1 - a])
    total = len(docs) * len(seeds) * steps
    runs, stopped = [], False
    for i, a in enumerate(docs):
        rows = []
        for j, seed in enumerate(seeds):
            base = (i * len(seeds) + j) * steps
            r = mixing_run(RunSettings(MICRO_CONFIG, steps, batch_size, lr, seed), proportions=[a, 1 - a],
                           pool_tokens=pool_tokens, should_stop=should_stop,
                           progress=None if progress is None else (lambda d, _t, b=base: progress(b + d, total)))
            if r["stopped"]:
                stopped = True
                break
            rows.append({**r, "proportions": [a, 1 - a], "seed": seed})
        if stopped:
            break
        runs += rows
    done = {r["proportions"][0] for r in runs}
    res = mixing_from_runs(runs, [[a, 1 - a] for a in heldout_docs if a in done], target_weights)
    res.stopped = stopped
    return res


def load_mixing(path=None) -> MixingResult:
    """The shipped mixing sweep (``sweeps/mixing.json``), validated and fitted."""
    from .recipes import SWEEP_DIR

    doc = read_sweep_file(path or SWEEP_DIR / "mixing.json", "mixing",
                          ("proportions", "seed", "steps", "domain_loss"), ("heldout", "target_weights"))
    return mixing_from_runs(doc["runs"], doc["settings"]["heldout"], doc["settings"]["target_weights"])
