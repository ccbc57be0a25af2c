"""Headless core of the AttentionLab and the CheckpointScrubber: every number the labs show, computed here.

The widgets (``widgets.attention_lab``) hold controls, figures and wiring only; what they draw comes from these
functions, so each view can be reproduced (and is tested) from a script::

    >>> from workbench.models import GPTConfig, TinyGPT
    >>> from workbench.tokenizers import ByteTokenizer
    >>> m = TinyGPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=32, pos="rope"), ByteTokenizer())
    >>> data = compute(m, "to be or not to be")
    >>> tiles = tile_values(data, "sink_mass")
    >>> tiles.values.shape, bool(tiles.scale.low <= tiles.values.min() <= tiles.values.max() <= tiles.scale.high)
    ((2, 2), True)
    >>> top_keys(data.probe, 1, 0, 17, k=3).positions.size
    3

Long context: a text longer than the model's context needs a policy; :data:`POLICY_CHOICES` are what the lab's
"long context" menu offers and :func:`make_policy` turns a choice into a :class:`~workbench.attention.Policy`.

Lesson: ``notebooks/02_attention.ipynb`` (4 · The Attention lab).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .capture import AttentionProbe, token_labels
from .errors import AttentionError, ContextLengthError, PolicyError
from .interventions import AblationResult, ablate_heads
from .metrics import METRICS, HeadMetrics, head_metrics, rollout, value_weighted
from .variants import Policy, as_policy, dense, lambda_mask, sliding_window
from .view import HeadView, head_view, probe_head_view, to_rgb

#: Views of one head: the pattern, value-weighted (Kobayashi et al.), rollout (Abnar & Zuidema), B - A.
MODES = ("raw", "value-weighted", "rollout", "difference")
#: Rollout multiplies (T, T) matrices per layer: T^3 work, so it is offered up to this many tokens.
ROLLOUT_MAX_T = 1024

# --- long-context policy ----------------------------------------------------------------------------------------
#: The name of the lab's control for the long-context policy (messages name it instead of a Python argument).
POLICY_CONTROL = "long context"
#: What the control offers, in order (values), and how it shows them.
POLICY_CHOICES = ("none", "dense", "sliding", "lambda")
POLICY_LABELS = {"none": "none (the model's context)", "dense": "dense (extrapolate positions)",
                 "sliding": "sliding window", "lambda": "lambda (first tokens + window)"}
#: Which of the policy's number controls each choice reads ("window", "n_global").
POLICY_USES = {"none": frozenset(), "dense": frozenset(), "sliding": frozenset({"window"}),
               "lambda": frozenset({"window", "n_global"})}


def make_policy(choice: str, window: int = 64, n_global: int = 4) -> Policy | None:
    """The :class:`Policy` of a choice of :data:`POLICY_CHOICES` (``"none"``: None, the model's own context)."""
    if choice not in POLICY_CHOICES:
        raise PolicyError(f"{POLICY_CONTROL} must be one of {POLICY_CHOICES}, got {choice!r}")
    if choice == "none":
        return None
    if choice == "dense":
        return dense()
    if not isinstance(window, (int, np.integer)) or window < 1:
        raise PolicyError(f"the window of a {POLICY_LABELS[choice]} policy must be a whole number >= 1, got {window!r}")
    if choice == "sliding":
        return sliding_window(int(window))
    if not isinstance(n_global, (int, np.integer)) or n_global < 1:
        raise PolicyError(f"a lambda policy keeps at least 1 first token, got {n_global!r}")
    return lambda_mask(int(n_global), int(window))


def policy_choice(policy) -> tuple[str, int, int, str]:
    """``(choice, window, n_global, note)`` showing ``policy`` in the control. A StreamingLLM policy is shown as
    the Lambda mask with the same numbers (a capture sees the same keys), and ``note`` says so."""
    p = as_policy(policy)
    if p is None:
        return "none", 64, 4, ""
    if p.kind == "dense":
        return "dense", 64, 4, ""
    if p.kind == "sliding":
        return "sliding", int(p.window), 4, ""
    note = ""
    if p.kind == "streaming":
        note = (f"StreamingLLM ({p.n_sink} sinks + {p.window}) shown as the lambda mask with the same numbers: "
                "a capture sees the same keys")
    return "lambda", int(p.window), int(p.n_sink), note


def open_probe(model, text, policy=None) -> AttentionProbe:
    """:class:`AttentionProbe` of ``text``; a text over the context without a policy gets a message that names the
    lab's :data:`POLICY_CONTROL` control (not a Python argument)."""
    try:
        return AttentionProbe(model, text, policy=policy)
    except ContextLengthError as e:
        if policy is not None or "no long-context policy" not in str(e):
            raise
        T, ctx = str(e).split(" tokens exceed", 1)[0], model.config.block_size
        if getattr(model.config, "pos", None) == "learned" and hasattr(model, "mask_fn"):
            raise ContextLengthError(
                f"{T} tokens exceed the model's context of {ctx}, and this model has learned positions, which stop "
                f"there: no '{POLICY_CONTROL}' policy helps; shorten the text") from None
        raise ContextLengthError(
            f"{T} tokens exceed the model's context of {ctx}: choose a policy in the '{POLICY_CONTROL}' menu (dense "
            "extrapolates RoPE/ALiBi positions; sliding window and lambda keep a window of recent keys), "
            "or shorten the text") from None


# --- one text (and an optional second one) ----------------------------------------------------------------------
@dataclass
class LabData:
    """What the lab computes for its text(s): probe and metrics of A, and of B when comparing."""

    probe: AttentionProbe
    metrics: HeadMetrics
    probe_b: AttentionProbe | None = None
    metrics_b: HeadMetrics | None = None
    _rollouts: dict = field(default_factory=dict, repr=False)
    _labels: dict = field(default_factory=dict, repr=False)

    @property
    def comparing(self) -> bool:
        return self.probe_b is not None

    def tokens(self, which: str = "a") -> list[str]:
        """Printable tokens of A or B (cached)."""
        probe = self.probe if which == "a" else self.probe_b
        if probe is None:
            raise AttentionError("no second text or model to compare with")
        if which not in self._labels:
            self._labels[which] = token_labels(probe.model, probe.ids.tolist())
        return self._labels[which]

    def rollout(self, which: str = "a") -> np.ndarray:
        """:func:`~workbench.attention.rollout` of A or B ``(L, T, T)`` (cached); limited to :data:`ROLLOUT_MAX_T`."""
        probe = self.probe if which == "a" else self.probe_b
        if probe.T > ROLLOUT_MAX_T:
            raise AttentionError(f"rollout is limited to {ROLLOUT_MAX_T} tokens (T^3 per layer); this text has {probe.T}")
        if which not in self._rollouts:
            self._rollouts[which] = rollout(probe)
        return self._rollouts[which]


def compute(model, text, compare_text: str = "", compare_model=None, policy=None) -> LabData:
    """Probe and metrics of ``text`` and, with a ``compare_text`` or ``compare_model`` (same layers x heads), of B:
    ``compare_model`` on ``compare_text or text``, or ``model`` on ``compare_text``. All or nothing."""
    L, H = model.config.n_layer, model.config.n_head
    if compare_model is not None and (compare_model.config.n_layer, compare_model.config.n_head) != (L, H):
        raise AttentionError(
            f"the model to compare with must have the same layers x heads as the model ({L}x{H}), got "
            f"{compare_model.config.n_layer}x{compare_model.config.n_head}")
    probe = open_probe(model, text, policy)
    metrics = head_metrics(probe)
    probe_b = metrics_b = None
    if compare_text or compare_model is not None:
        probe_b = open_probe(compare_model or model, compare_text or text, policy)
        metrics_b = head_metrics(probe_b)
    return LabData(probe, metrics, probe_b, metrics_b)


def available_modes(T: int, comparing: bool) -> tuple[str, ...]:
    """The modes that apply: rollout up to :data:`ROLLOUT_MAX_T` tokens, difference only with a B."""
    return tuple(m for m in MODES if (m != "rollout" or T <= ROLLOUT_MAX_T) and (m != "difference" or comparing))


# --- colour scales -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ColourScale:
    """A colour bar's range and tick format: ``low``..``high`` cover the values drawn; ``diverging``: centred on 0
    (red above, blue below); ``fmt``: a printf format whose labels stay distinct and short over the range;
    ``flat``: every value drawn is 0 (a difference of identical inputs): the range is a tiny symmetric one, the bar
    shows the single tick 0 and says "no difference" instead of describing colours that are not there."""

    low: float
    high: float
    diverging: bool
    fmt: str
    flat: bool = False

    @property
    def ticks(self) -> list[float]:
        """The colour bar's ticks: 5 over ``low..high``, or just 0 when ``flat``."""
        return [0.0] if self.flat else np.linspace(self.low, self.high, 5).tolist()


def tick_format(low: float, high: float) -> str:
    """A printf format for colour-bar labels over ``[low, high]``: enough decimals to tell about 5 ticks apart
    (``%.4f`` for +-0.004, ``%.2f`` for 0..1, ``%.1f`` for 0..30, ``%.0f`` for 0..250), scientific below
    1e-4."""
    span = float(high) - float(low)
    top = max(abs(float(low)), abs(float(high)))
    if not np.isfinite(span) or span <= 0 or top == 0:
        return "%.2f"
    if top < 1e-4:
        return "%.1e"
    return f"%.{min(8, max(0, math.ceil(-math.log10(span / 5)) + 1))}f"


def colour_scale(values, diverging: bool = False) -> ColourScale:
    """The colour range of ``values`` (NaNs ignored): ``0..max`` (or ``min..max`` when some are negative) for
    sequential colours, ``-m..m`` with ``m = max |v|`` for diverging ones; never empty."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if diverging:
        m = float(np.abs(v).max()) if v.size else 0.0
        if m == 0:  # nothing differs: no colour range to describe
            return ColourScale(-1e-9, 1e-9, True, "%.0f", flat=True)
        return ColourScale(-m, m, True, tick_format(-m, m))
    lo = min(float(v.min()), 0.0) if v.size else 0.0
    hi = float(v.max()) if v.size else 1.0
    hi = hi if hi > lo else lo + 1e-9
    return ColourScale(lo, hi, False, tick_format(lo, hi))


# --- the overview tiles -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tiles:
    """The ``(L, H)`` values the tiles show (NaN where the metric is unavailable), their texts and colour scale."""

    values: np.ndarray
    text: list[str]
    scale: ColourScale
    difference: bool
    why: str = ""


def tile_values(data: LabData, metric: str, difference: bool = False) -> Tiles:
    """The tiles for ``metric``: A's per-head values, or ``B - A`` when ``difference`` (and comparing)."""
    if metric not in METRICS:
        raise AttentionError(f"unknown metric {metric!r}; choose one of {METRICS}")
    L, H = data.probe.n_layer, data.probe.n_head
    diff = difference and data.comparing
    why = ""
    try:
        v = np.asarray(data.metrics.get(metric), dtype=np.float64)
        if diff:
            v = np.asarray(data.metrics_b.get(metric), dtype=np.float64) - v
    except AttentionError as e:
        v, why = np.full((L, H), np.nan), str(e)
    scale = colour_scale(v, diverging=diff)
    fmt = scale.fmt.replace("%", "%+") if diff else scale.fmt
    text = ["n/a" if not np.isfinite(x) else fmt % x for x in v.reshape(-1)]
    return Tiles(v, text, scale, diff, why)


# --- one head -----------------------------------------------------------------------------------------------------
def difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``B - A`` on the first ``min(T_a, T_b)`` queries and keys (the tokens both texts have)."""
    T = min(a.shape[0], b.shape[0])
    return np.asarray(b[:T, :T], dtype=np.float32) - np.asarray(a[:T, :T], dtype=np.float32)


def head_pattern(data: LabData, layer: int, head: int, mode: str, which: str = "a") -> np.ndarray:
    """One head's full ``(T, T)`` pattern of A or B under ``mode`` (raw, value-weighted or rollout); value-weighted
    is :func:`~workbench.attention.value_weighted` of that head's capture."""
    probe = data.probe if which == "a" else data.probe_b
    if mode == "raw":
        return probe.probs(layer, [head])[0].cpu().numpy()
    if mode == "value-weighted":
        cap = probe.capture(layers=[layer], heads=[head])
        if cap.value_norms is None:
            raise AttentionError(f"value-weighted view unavailable: {probe.value_norm_error}")
        return value_weighted(cap)[0, 0]
    if mode == "rollout":
        return data.rollout(which)[layer]
    raise AttentionError(f"mode must be one of {MODES[:3]} here, got {mode!r}")


def detail_view(data: LabData, layer: int, head: int, mode: str, max_side: int = 512) -> HeadView:
    """The detail image: raw and value-weighted built blockwise (:func:`probe_head_view`, never the whole pattern);
    rollout and difference (``B - A``, raw) from the full patterns, downsampled to ``max_side``."""
    if mode not in MODES:
        raise AttentionError(f"mode must be one of {MODES}, got {mode!r}")
    if mode in ("raw", "value-weighted"):
        return probe_head_view(data.probe, layer, head, data.tokens(), max_side, value_weighted=mode == "value-weighted")
    if mode == "rollout":
        return head_view(head_pattern(data, layer, head, "rollout"), 0, data.tokens(), max_side)
    if not data.comparing:
        raise AttentionError("difference needs a second prompt in 'compare' or a model to compare with")
    d = difference(head_pattern(data, layer, head, "raw"), head_pattern(data, layer, head, "raw", "b"))
    return head_view(d, 0, common_tokens(data)[: d.shape[0]], max_side)


def common_tokens(data: LabData) -> list[str]:
    """Labels of the positions A and B share: the token, or ``a|b`` where the two differ."""
    la, lb = data.tokens("a"), data.tokens("b")
    return [x if x == y else f"{x}|{y}" for x, y in zip(la, lb)]


def compare_views(data: LabData, layer: int, head: int, mode: str, side: int = 256) -> dict[str, HeadView]:
    """The comparison row: A's and B's head (``mode``; raw in difference mode) and ``B - A`` on their common
    tokens, each downsampled to ``side``; keys ``"a"``, ``"b"``, ``"diff"``."""
    if not data.comparing:
        raise AttentionError("comparison needs a second prompt in 'compare' or a model to compare with")
    m = "raw" if mode == "difference" else mode
    a, b = head_pattern(data, layer, head, m, "a"), head_pattern(data, layer, head, m, "b")
    d = difference(a, b)
    return {"a": head_view(a, 0, data.tokens("a"), side), "b": head_view(b, 0, data.tokens("b"), side),
            "diff": head_view(d, 0, common_tokens(data)[: d.shape[0]], side)}


def compare_scales(views: dict[str, HeadView]) -> dict[str, ColourScale]:
    """A and B on one scale (``0..max`` of both), ``B - A`` centred on 0."""
    both = colour_scale(np.concatenate([views["a"].image.ravel(), views["b"].image.ravel()]))
    return {"a": both, "b": both, "diff": colour_scale(views["diff"].image, diverging=True)}


def view_scale(view: HeadView, diverging: bool = False) -> ColourScale:
    """The colour scale of one head image (its own values)."""
    return colour_scale(view.image, diverging)


def position_labels(view: HeadView) -> tuple[list[str], list[str]]:
    """Hover labels of the image rows (queries) and columns (keys): ``"17: 'e'"`` for one token (position and
    token), ``"64-127 (64 tokens)"`` for a block of a downsampled image."""
    def one(edges, tokens):
        out = []
        for a, b, t in zip(edges[:-1], edges[1:], tokens):
            out.append(f"{int(a)}: {t!r}" if b - a == 1 else f"{int(a)}-{int(b) - 1} ({int(b - a)} tokens)")
        return out

    return one(view.q_edges, view.q_labels), one(view.k_edges, view.k_labels)


@dataclass(frozen=True)
class TopKeys:
    """The keys a query attends to most: ``positions``, ``labels`` (``"pos: 'tok'"``) and ``weights``, heaviest
    first; ``query_label`` names the query the same way."""

    query: int
    query_label: str
    positions: np.ndarray
    labels: list[str]
    weights: np.ndarray


def top_keys(probe: AttentionProbe, layer: int, head: int, query: int, k: int = 10, tokens=None) -> TopKeys:
    """The ``k`` keys with the largest weight in row ``query`` of one head (ties: the earlier key first)."""
    if not 0 <= int(query) < probe.T:
        raise AttentionError(f"query must be a position 0..{probe.T - 1}, got {query}")
    q = int(query)
    row = probe.probs(layer, [head], (q, q + 1))[0, 0].float().cpu().numpy()
    tokens = tokens if tokens is not None else token_labels(probe.model, probe.ids.tolist())
    order = np.argsort(-row, kind="stable")[: min(int(k), q + 1)]
    return TopKeys(q, f"{q}: {tokens[q]!r}", order, [f"{int(j)}: {tokens[j]!r}" for j in order],
                   row[order].astype(np.float64))


# --- the next-token chart and ablation ----------------------------------------------------------------------------
@dataclass(frozen=True)
class NextTokens:
    """Next-token probabilities at the last position: ``ids`` (clean top ``k``, plus the 3 tokens ablation moves
    most), unique ``labels``, ``base`` and ``ablated`` (None while nothing is ablated), the ablation result."""

    ids: np.ndarray
    labels: list[str]
    base: np.ndarray
    ablated: np.ndarray | None
    result: AblationResult | None


def next_tokens(model, probe: AttentionProbe, ablated_heads=(), k: int = 10, policy=None) -> NextTokens:
    """The clean distribution (the probe's own last logits: no extra forward pass) and, with ``ablated_heads``,
    the distribution with them zeroed (:func:`~workbench.attention.ablate_heads`)."""
    heads = sorted({(int(a), int(b)) for a, b in ablated_heads})
    r = None
    if heads:
        r = ablate_heads(model, probe.ids, heads, k=k, policy=policy)
        base_lp = r.base
    else:
        base_lp = probe.logits_last.float().log_softmax(-1).cpu().numpy()
    order = np.argsort(-base_lp, kind="stable")[:k]
    if r is not None:
        order = np.unique(np.concatenate([order, [t[0] for t in r.top[:3]]]))
        order = order[np.argsort(-base_lp[order], kind="stable")]
    labels, seen = [], set()
    for i, s in zip(order, token_labels(model, order.tolist())):
        s = s if s not in seen else f"{s}#{i}"
        seen.add(s)
        labels.append(s)
    return NextTokens(order, labels, np.exp(base_lp[order]), None if r is None else np.exp(r.ablated[order]), r)


# --- pictures -----------------------------------------------------------------------------------------------------
def rgb(image: np.ndarray, scale: ColourScale | None = None) -> np.ndarray:
    """``(h, w)`` values -> ``(h, w, 3)`` uint8: Viridis over ``scale`` (default: :func:`colour_scale` of the image)
    for patterns; for a diverging scale white at 0, pure red at ``+high`` and pure blue at ``-high``."""
    image = np.asarray(image, dtype=np.float64)
    scale = scale or colour_scale(image)
    if not scale.diverging:
        return to_rgb(image, scale.low, scale.high)
    m = scale.high
    r = np.clip(255 * (image / m), 0, 255)
    b = np.clip(-255 * (image / m), 0, 255)
    out = np.stack([r, np.zeros_like(image), b], -1)
    return (255 - out.max(-1, keepdims=True) + out).astype(np.uint8)


def png_scale(height: int) -> int:
    """Pixel repetition so that a picture is at least about 256 pixels tall."""
    return max(1, 256 // max(1, int(height)))


def detail_picture(view: HeadView, diverging: bool = False) -> tuple[np.ndarray, int]:
    """The detail image as ``(h, w, 3)`` uint8 on its own colour scale, and its pixel repetition."""
    return rgb(view.image, view_scale(view, diverging)), png_scale(max(view.image.shape))


def compare_picture(views: dict[str, HeadView]) -> tuple[np.ndarray, int]:
    """A | B | B - A side by side (A and B on one scale), each padded to the tallest with white and separated by
    2 white columns; and its pixel repetition."""
    scales = compare_scales(views)
    parts = [rgb(views[k].image, scales[k]) for k in ("a", "b", "diff")]
    h = max(p.shape[0] for p in parts)
    gap = np.full((h, 2, 3), 255, np.uint8)
    padded = [np.concatenate([p, np.full((h - p.shape[0], p.shape[1], 3), 255, np.uint8)]) for p in parts]
    return np.concatenate([padded[0], gap, padded[1], gap, padded[2]], axis=1), png_scale(h)


# --- the checkpoint scrubber --------------------------------------------------------------------------------------
def induction_curve(run, layer: int, head: int, shift: int = 0) -> np.ndarray:
    """One head's induction score at every checkpoint of an :class:`~workbench.attention.InductionRun`, ``(n,)``;
    with ``shift`` the score of attending ``shift`` tokens after the usual induction target."""
    from .capture import capture_attention
    from .metrics import induction_score

    if not shift:
        return np.asarray(run.induction[:, layer, head], dtype=np.float64)
    return np.array([induction_score(capture_attention(run.model_at(i), run.eval_ids, layers=[layer], heads=[head],
                                                       value_norms=False), shift=shift)[0, 0]
                     for i in range(len(run.steps))])


def checkpoint_pattern(run, i: int, layer: int, head: int) -> np.ndarray:
    """Head ``(layer, head)`` of checkpoint ``i`` on the run's evaluation sequence ``(T, T)``."""
    from .capture import capture_attention

    return capture_attention(run.model_at(i), run.eval_ids, layers=[layer], heads=[head], value_norms=False).probs[0, 0]


def scaled_loss(run) -> np.ndarray:
    """The loss on the repeated half relative to its first value, clipped to 0..1 (drawn beside the scores)."""
    loss = np.asarray(run.loss_second, dtype=np.float64)
    return np.clip(loss / max(float(loss[0]), 1e-9), 0.0, 1.0)


def integer_ticks(lo: float, hi: float, max_ticks: int = 8) -> list[int]:
    """Whole-number ticks in ``[lo, hi]`` (layers, heads, positions, steps), at most ``max_ticks``, at a step of
    1, 2 or 5 times a power of ten."""
    a, b = math.ceil(lo), math.floor(hi)
    if b < a:
        return []
    step, n = 1, b - a
    while n // step + 1 > max(1, max_ticks):
        step = _next_step(step)
    first = math.ceil(a / step) * step
    return list(range(first, b + 1, step))


def _next_step(step: int) -> int:
    mag = 10 ** int(math.floor(math.log10(step)))
    lead = step // mag
    return {1: 2, 2: 5, 5: 10}.get(lead, 10) * mag
