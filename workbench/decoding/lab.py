"""Headless core of the DecodingLab: settings, strategy dispatch, the cursor rule and every number the lab draws.

The widget (``widgets.DecodingLab``) holds controls, figures and wiring only; what it shows comes from here,
so each view can be reproduced (and is tested) from a script::

    >>> from workbench.models import TinyGPT, GPTConfig
    >>> from workbench.tokenizers import ByteTokenizer
    >>> tok = ByteTokenizer()
    >>> m = TinyGPT(GPTConfig(vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=16, block_size=64),
    ...             tokenizer=tok)
    >>> s = LabSettings(strategy="sample", top_k=5, max_new_tokens=6)
    >>> r = run(m, None, prompt_ids(m, "abc", 6), s)
    >>> view = stage_view(r, 3, token_labeller(m))
    >>> view.stages
    ['raw', 'temperature=1', 'top_k=5']

Strategies use one vocabulary, :data:`~workbench.decoding.compare.KINDS` (``"diverse_beam"``, not
``"diverse beam"``); :data:`LABELS` only says how a control shows them. Dispatch goes through
:class:`~workbench.decoding.compare.Strategy`, the same object :func:`~workbench.decoding.compare.compare` runs.

Lesson: ``notebooks/03_decoding.ipynb`` (7. The lab).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from .compare import KINDS, Strategy
from .pipeline import Pipeline
from .processors import DecodingError
from .speculative import expected_tokens_per_call

#: How a strategy kind is shown in a control (the value stays the kind).
LABELS = {"greedy": "greedy", "sample": "sample", "beam": "beam", "diverse_beam": "diverse beam",
          "prompt_lookup": "prompt lookup", "speculative": "speculative"}

#: Controls of the sampling pipeline (and its noise).
PIPELINE_CONTROLS = frozenset({"order", "temperature", "top_k", "top_p", "min_p", "typical", "seed"})
#: Controls every strategy reads.
COMMON_CONTROLS = frozenset({"strategy", "max_new_tokens", "mask_undecodable"})
#: Which extra controls each strategy reads: a change of any other control cannot change its result.
USES = {
    "greedy": frozenset(),
    "sample": PIPELINE_CONTROLS,
    "beam": frozenset({"num_beams"}),
    "diverse_beam": frozenset({"num_beams", "num_groups", "diversity"}),
    "prompt_lookup": frozenset(),
    "speculative": PIPELINE_CONTROLS | {"gamma"},
}
#: Every setting control, in the order the lab lays them out.
CONTROLS = ("strategy", "order", "temperature", "top_k", "top_p", "min_p", "typical", "seed", "num_beams",
            "num_groups", "diversity", "gamma", "max_new_tokens", "mask_undecodable")

#: What the comparison tab can run, and which controls each choice reads.
COMPARE_CHOICES = ("current settings", "hf order", "vllm order", "llamacpp order", "greedy", "beam",
                   "prompt lookup", "speculative")
COMPARE_USES = {
    "current settings": PIPELINE_CONTROLS,
    "hf order": PIPELINE_CONTROLS - {"order"},
    "vllm order": PIPELINE_CONTROLS - {"order"},
    "llamacpp order": PIPELINE_CONTROLS - {"order"},
    "greedy": frozenset(),
    "beam": frozenset({"num_beams"}),
    "prompt lookup": frozenset(),
    "speculative": PIPELINE_CONTROLS | {"gamma"},
}

#: What one cursor step moves over: a generated position, or a speculative round.
UNITS = {"greedy": "position", "sample": "position", "beam": "position", "diverse_beam": "position",
         "prompt_lookup": "position", "speculative": "round"}


def kind_of(name: str) -> str:
    """The strategy kind for a kind or its label (``"diverse beam"`` -> ``"diverse_beam"``)."""
    if name in KINDS:
        return name
    for k, lab in LABELS.items():
        if name == lab:
            return k
    raise DecodingError(f"unknown strategy {name!r}; choose one of {KINDS}")


def affects(control: str, kind: str) -> bool:
    """Whether changing ``control`` can change the result of strategy ``kind`` (so the lab recomputes)."""
    kind = kind_of(kind)
    return control == "prompt" or control in COMMON_CONTROLS or control in USES[kind]


def enabled_controls(kind: str, compare_choices=()) -> frozenset:
    """Controls that apply now: those the strategy reads, plus those a ticked comparison choice reads
    (they only change the comparison, so they do not recompute the main view)."""
    on = set(COMMON_CONTROLS) | USES[kind_of(kind)]
    for c in compare_choices:
        if c not in COMPARE_USES:
            raise DecodingError(f"unknown comparison choice {c!r}; choose from {COMPARE_CHOICES}")
        on |= COMPARE_USES[c]
    return frozenset(on)


@dataclass
class LabSettings:
    """Everything the lab's controls set. Off-values: ``top_k=0``, ``top_p=1``, ``min_p=0``, ``typical=1``."""

    strategy: str = "sample"
    order: str = "hf"
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    typical: float = 1.0
    seed: int = 0
    num_beams: int = 4
    num_groups: int = 2
    diversity: float = 1.0
    gamma: int = 4
    max_new_tokens: int = 40
    mask_undecodable: bool = False

    def __post_init__(self):
        self.strategy = kind_of(self.strategy)

    def as_dict(self) -> dict:
        return asdict(self)

    def pipeline(self) -> Pipeline:
        """The sampling pipeline the settings describe (off-values left out), in the chosen engine order."""
        params = dict(temperature=float(self.temperature))
        if self.top_k > 0:
            params["top_k"] = int(self.top_k)
        if self.top_p < 1.0:
            params["top_p"] = float(self.top_p)
        if self.min_p > 0.0:
            params["min_p"] = float(self.min_p)
        if self.typical < 1.0:
            params["typical"] = float(self.typical)
        return Pipeline.preset(self.order, **params)

    def diverse_shape(self) -> tuple[int, int]:
        """``(num_beams, num_groups)`` for diverse beam search: beams rounded down to a multiple of the groups
        (at least one beam per group)."""
        g = int(self.num_groups)
        return max(g, int(self.num_beams) // g * g), g

    def strategy_object(self, top_n: int = 8) -> Strategy:
        """The :class:`~workbench.decoding.compare.Strategy` these settings run (``top_n``: traced candidates)."""
        k = self.strategy
        if k == "greedy":
            return Strategy("greedy", params={"top_n": top_n})
        if k == "sample":
            return Strategy("sample", self.pipeline(), params={"top_n": top_n, "strategy": "sample"}, name="sample")
        if k == "beam":
            return Strategy("beam", params={"num_beams": int(self.num_beams)})
        if k == "diverse_beam":
            nb, g = self.diverse_shape()
            return Strategy("diverse_beam", params={"num_beams": nb, "num_groups": g,
                                                     "diversity_penalty": float(self.diversity)})
        if k == "prompt_lookup":
            return Strategy("prompt_lookup")
        return Strategy("speculative", self.pipeline(), params={"gamma": int(self.gamma)})

    def compare_strategies(self, choices) -> list[Strategy]:
        """The strategies for ticked :data:`COMPARE_CHOICES`, built from these settings."""
        pipe = self.pipeline()
        out = []
        for choice in choices:
            if choice == "current settings":
                out.append(Strategy("sample", pipe, name=f"sample, {self.order} order"))
            elif choice in ("hf order", "vllm order", "llamacpp order"):
                o = choice.split()[0]
                out.append(Strategy("sample", pipe.with_order(o), name=f"sample, {o} order"))
            elif choice == "beam":
                out.append(Strategy("beam", params={"num_beams": int(self.num_beams)}))
            elif choice == "speculative":
                out.append(Strategy("speculative", pipe, params={"gamma": int(self.gamma)}))
            elif choice in ("greedy", "prompt lookup"):
                out.append(Strategy(kind_of(choice)))
            else:
                raise DecodingError(f"unknown comparison choice {choice!r}; choose from {COMPARE_CHOICES}")
        return out


def prompt_ids(model, text: str, max_new_tokens: int) -> list[int]:
    """The prompt's ids, cut from the left so prompt plus ``max_new_tokens`` fit the model's context."""
    tok = getattr(model, "tokenizer", None)
    ids = tok.encode(text) if tok is not None else []
    if not ids:
        raise DecodingError("type a prompt first")
    room = model.config.block_size - int(max_new_tokens)
    if room < 1:
        raise DecodingError(f"{max_new_tokens} new tokens leave no room for a prompt in the model's context of "
                            f"{model.config.block_size}")
    return list(ids[-room:])


def run(model, draft, ids, settings: LabSettings, top_n: int = 8):
    """Run the strategy the settings choose once; returns its result (``DecodeTrace``, ``BeamResult`` or
    ``SpeculativeResult``)."""
    if settings.strategy == "speculative" and draft is None:
        raise DecodingError("speculative decoding needs a draft model: DecodingLab(model, draft=...)")
    _, result = settings.strategy_object(top_n).run(model, ids, int(settings.max_new_tokens), int(settings.seed),
                                                    draft, bool(settings.mask_undecodable))
    return result


def n_steps(result) -> int:
    """How many cursor steps a result has: rounds (speculative), search steps (beam) or tokens."""
    return 0 if result is None else result.n_steps


def next_cursor(cursor: int, old_steps: int, new_steps: int, *, same_unit: bool = True,
                same_prompt: bool = True) -> int:
    """Where the cursor goes after a recompute (a control changed).

    The rule: with nothing to show, 0. If the old view showed nothing, or the prompt changed, or a step now
    means something else (generated positions vs speculative rounds), back to step 1. Otherwise the cursor
    stays on the same step: a cursor at the old end stays at the new end, any other is kept, but never past
    the new end.
    """
    if new_steps <= 0:
        return 0
    if old_steps <= 0 or cursor < 1 or not (same_unit and same_prompt):
        return 1
    if cursor >= old_steps:
        return new_steps
    return min(cursor, new_steps)


def shown_tokens(result, cursor: int) -> list[int]:
    """The generated tokens the text view shows at ``cursor``: a beam search's best only once it is done."""
    return [] if result is None else result.tokens_at(cursor)


def token_labeller(model):
    """``id -> text`` for labels: the tokenizer's ``token_str`` (``<id N>`` for ids without text)."""
    tok = getattr(model, "tokenizer", None)
    return tok.token_str if tok is not None else str


def tick_interval(span: float, max_ticks: int = 10) -> int:
    """An integer tick interval (1, 2, 5, 10, 20, ...) giving at most ``max_ticks`` ticks over ``span``."""
    span = max(float(span), 1.0)
    k = 0
    while True:
        for m in (1, 2, 5):
            step = m * 10 ** k
            if span / step <= max_ticks:
                return step
        k += 1


def y_top(values, floor: float = 0.02, cap: float = 1.0, headroom: float = 1.12) -> float:
    """Top of a probability axis that fits the data shown: the largest value plus headroom, at most ``cap``,
    at least ``floor`` (so small bars stay visible instead of vanishing under a fixed 0-1 axis)."""
    m = max((float(v) for v in values if v is not None and math.isfinite(v)), default=0.0)
    return min(cap, max(floor, m * headroom))


def short_label(text: str, width: int = 8) -> str:
    """``text`` cut to ``width`` characters (an ellipsis marks the cut)."""
    return text if len(text) <= width else text[: width - 1] + "\u2026"


# ------------------------------------------------------------------------------------------------ step view
@dataclass
class StageView:
    """The stage chart at one step: bars of each candidate's probability after each pipeline stage.

    ``rows``: one row per (candidate, stage) with ``x`` (candidate ``j`` at ``x == j``, its stages side by
    side around it), ``width``, ``prob``, ``candidate``, ``token``, ``stage`` (name), ``stage_index``,
    ``kept`` (tokens the stage kept) and ``chosen``; for a log axis ``prob_log`` (a removed token, p = 0, sits
    at the floor: no bar) and ``log_floor``. ``stages`` / ``kept``: per stage; ``labels``: per candidate (the
    chosen one marked ``*``); ``y_max``: the linear axis top that fits the bars; ``log_floor``: the log axis
    bottom (a third of the smallest non-zero probability shown, within [1e-9, 0.1]).
    """

    step: int
    stages: list[str]
    kept: list[int]
    labels: list[str]
    rows: dict
    y_max: float
    title: str
    log_floor: float = 1e-3

    @property
    def ticks(self) -> list[int]:
        return list(range(len(self.labels)))


STAGE_COLUMNS = ("x", "width", "prob", "candidate", "token", "stage", "stage_index", "kept", "chosen", "prob_log",
                 "log_floor")


def stage_view(trace, cursor: int, label=str, group_width: float = 0.84) -> StageView:
    """The stage chart for the step the cursor shows (step ``cursor - 1``) of a ``DecodeTrace``."""
    rows = {c: [] for c in STAGE_COLUMNS}
    steps = getattr(trace, "steps", None) or []
    if cursor < 1 or not steps:
        return StageView(-1, [], [], [], rows, 1.0, "this step's distribution through each stage")
    st = steps[min(cursor, len(steps)) - 1]
    S = len(st.stages)
    w = group_width / S
    labels = []
    for j, tid in enumerate(st.candidates):
        labels.append(label(tid) + (" *" if tid == st.chosen else ""))
        for k, snap in enumerate(st.stages):
            rows["x"].append(j + (k - (S - 1) / 2) * w)
            rows["width"].append(w * 0.92)
            rows["prob"].append(float(snap.probs[j]))
            rows["candidate"].append(j)
            rows["token"].append(label(tid))
            rows["stage"].append(snap.name)
            rows["stage_index"].append(k)
            rows["kept"].append(int(snap.kept))
            rows["chosen"].append(tid == st.chosen)
    title = (f"step {st.step + 1}: chose {label(st.chosen)!r} (p={st.chosen_prob:.3f}, kept {st.kept}, "
             f"H={st.entropy:.2f} bits)")
    floor = log_floor(rows["prob"])
    rows["prob_log"] = [p if p > floor else floor for p in rows["prob"]]
    rows["log_floor"] = [floor] * len(rows["prob"])
    return StageView(st.step, [s.name for s in st.stages], [int(s.kept) for s in st.stages], labels, rows,
                     y_top(rows["prob"]), title, floor)


def log_floor(values, lo: float = 1e-9, hi: float = 0.1) -> float:
    """Bottom of a log probability axis: a third of the smallest non-zero value, kept within ``[lo, hi]``."""
    nz = [float(v) for v in values if v is not None and math.isfinite(v) and v > 0]
    return min(hi, max(lo, min(nz) / 3)) if nz else hi


def timeline_rows(trace, cursor: int, label=str) -> dict:
    """Entropy (bits) of each step's raw distribution and surprisal (bits) of the chosen token, up to the cursor.
    Steps are numbered from 1, as the cursor counts them ("step 1 / 40" is the first generated token)."""
    steps = (getattr(trace, "steps", None) or [])[: max(cursor, 0)]
    return dict(step=[s.step + 1 for s in steps], entropy=[float(s.entropy) for s in steps],
                surprisal=[float(s.surprisal) for s in steps], token=[label(s.chosen) for s in steps])


# ------------------------------------------------------------------------------------------------ beam tree
@dataclass
class BeamLayout:
    """Where the beam tree's nodes sit: ``x`` = search step (root at -1), ``y`` = rank among the nodes of
    that step (by group, then best cumulative score first; 0 is the top row). ``text`` is the label drawn
    beside a node (empty for pruned candidates, whose token is in ``token`` for the hover)."""

    nodes: dict
    edges: dict
    n_rows: int
    last_step: int


def beam_layout(result, cursor: int, label=str, label_width: int = 8) -> BeamLayout:
    """The beam tree up to the cursor (nodes of steps ``< cursor``) of a ``BeamResult``."""
    shown = [n for n in result.nodes if n.step < cursor]
    by_step: dict[int, list] = {}
    for n in shown:
        by_step.setdefault(n.step, []).append(n)
    ypos = {}
    for ns in by_step.values():
        for rank, n in enumerate(sorted(ns, key=lambda n: (n.group, -n.cum_score))):
            ypos[n.id] = rank
    tokens = ["" if n.token is None else label(n.token) for n in shown]
    nodes = dict(id=[n.id for n in shown], x=[n.step for n in shown], y=[ypos[n.id] for n in shown],
                 token=tokens,
                 text=["" if n.status in ("pruned", "root") else short_label(t, label_width)
                       for n, t in zip(shown, tokens)],
                 status=[n.status for n in shown], group=[n.group for n in shown],
                 score=[float(n.cum_score) for n in shown])
    edges_of = [n for n in shown if n.parent is not None]
    edges = dict(x0=[result.nodes[n.parent].step for n in edges_of], y0=[ypos[n.parent] for n in edges_of],
                 x1=[n.step for n in edges_of], y1=[ypos[n.id] for n in edges_of],
                 status=[n.status for n in edges_of])
    return BeamLayout(nodes, edges, max((len(v) for v in by_step.values()), default=1),
                      max(by_step, default=-1))


# ------------------------------------------------------------------------------------------------ speculative
SPEC_STATUSES = ("accepted", "rejected", "not verified")


def spec_rows(result, cursor: int, label=str) -> dict:
    """One row per drafted token of the rounds up to the cursor: ``x`` (its generated position; a round's
    drafts are followed by a gap for the target's own token), target ``p``, draft ``q``, ``token``,
    ``status`` (:data:`SPEC_STATUSES`: verification stops at the first rejection) and ``round``."""
    out = dict(x=[], p=[], q=[], token=[], status=[], round=[])
    pos = 0
    for r_i, rd in enumerate(result.rounds[: max(cursor, 0)]):
        for i, d in enumerate(rd.draft_tokens):
            st = ("accepted" if rd.accepted[i] else "rejected") if i < len(rd.accepted) else "not verified"
            out["x"].append(pos + i)
            out["p"].append(float(rd.p[i]))
            out["q"].append(float(rd.q[i]))
            out["token"].append(label(d))
            out["status"].append(st)
            out["round"].append(r_i + 1)
        pos += len(rd.draft_tokens) + 1
    return out


def acceptance_curve(result, cursor: int) -> dict:
    """Running figures after each round up to the cursor: ``alpha`` (accepted / verified so far),
    ``tokens_per_call`` (tokens emitted per target call so far) and ``expected``, the formula
    ``(1 - a^(g+1)) / (1 - a)`` at the running alpha. After the last round ``alpha`` equals ``stats.alpha``."""
    out = dict(round=[], alpha=[], tokens_per_call=[], expected=[])
    acc = ver = toks = 0
    for i, rd in enumerate(result.rounds[: max(cursor, 0)]):
        acc += rd.n_accepted
        ver += len(rd.accepted)
        toks += len(rd.emitted)
        a = acc / ver if ver else 0.0
        out["round"].append(i + 1)
        out["alpha"].append(a)
        out["tokens_per_call"].append(toks / (i + 1))
        out["expected"].append(expected_tokens_per_call(a, result.stats.gamma))
    return out


def describe(result) -> str:
    """One line about a result: its strategy and the figures that matter for it."""
    return result.summary(LABELS)


__all__ = [
    "LABELS", "CONTROLS", "USES", "PIPELINE_CONTROLS", "COMMON_CONTROLS", "COMPARE_CHOICES", "COMPARE_USES",
    "UNITS", "SPEC_STATUSES", "STAGE_COLUMNS", "kind_of", "affects", "enabled_controls", "LabSettings",
    "prompt_ids", "run", "n_steps", "next_cursor", "shown_tokens", "token_labeller", "tick_interval", "y_top",
    "log_floor", "short_label", "StageView", "stage_view", "timeline_rows", "BeamLayout", "beam_layout", "spec_rows",
    "acceptance_curve", "describe",
]
