"""Result dataclasses that flow from the decoding core to widgets and notebooks.

* :class:`StepTrace` / :class:`DecodeTrace`: one sampled or greedy step: the raw distribution's top
  candidates, their probabilities after each pipeline stage, kept-set size, entropy, surprisal, the choice.
* :class:`BeamNode` / :class:`BeamHypothesis` / :class:`BeamResult`: the beam tree. Each node stores the
  transition score of its token (the processed log-probability, as HF's ``compute_transition_scores``) and
  the cumulative score; a hypothesis' transition scores, summed in step order, equal its raw score exactly
  (the same float32 additions the search made), and ``raw_score / length ** length_penalty`` is its score.
* :class:`SpecRound` / :class:`SpeculativeStats` / :class:`SpeculativeResult`: speculative decoding rounds.
* :class:`LookupRound` / :class:`LookupStats`: prompt-lookup decoding's drafts (``DecodeTrace.lookup``).

The three results share one small protocol, :class:`DecodingResult`: ``prompt``, ``tokens``, ``text``,
``n_steps`` (what a lab's cursor walks through: generated tokens, search steps or rounds), ``tokens_at(cursor)``
(the generated tokens shown at a cursor), ``summary()`` (one line) and ``view`` (which drawing fits it).

Entropies and surprisals are in bits; log-probabilities and beam scores in nats (as HF reports them).

Lesson: ``notebooks/03_decoding.ipynb`` (3. Inside one sampled step; 4. Beam search and diverse beam search).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Protocol, runtime_checkable


@runtime_checkable
class DecodingResult(Protocol):
    """What every decoding result offers a lab or a notebook, whatever the strategy."""

    view: ClassVar[str]  # "steps", "beam" or "spec": the drawing that fits the result
    prompt: list[int]
    tokens: list[int]
    text: str | None

    @property
    def n_steps(self) -> int:
        """How many steps a cursor walks through: generated tokens, search steps (beam) or rounds (speculative)."""

    def tokens_at(self, cursor: int) -> list[int]:
        """The generated tokens to show at ``cursor`` (1 .. n_steps)."""

    def summary(self, labels: dict | None = None) -> str:
        """One line: the strategy and the figures that matter for it (``labels`` renames strategies)."""


@dataclass
class StageSnapshot:
    """The distribution after one pipeline stage, seen through the step's candidate tokens.

    ``probs[i]`` is the probability of ``StepTrace.candidates[i]`` after this stage (0 if removed).
    """

    name: str
    probs: list[float]
    kept: int
    entropy: float


@dataclass
class StepTrace:
    """One generated position (index ``step`` from 0 after the prompt).

    ``candidates``: the raw distribution's top token ids (most likely first), then tokens that enter a later
    stage's top (a repetition penalty re-ranks), then the chosen token if it was not among them. ``stages[0]`` is the raw distribution, then one snapshot per pipeline stage.
    ``surprisal`` is ``-log2 p_raw(chosen)``; ``entropy`` is the raw distribution's, ``final_entropy`` the one
    actually sampled from.
    """

    step: int
    candidates: list[int]
    stages: list[StageSnapshot]
    chosen: int
    chosen_prob: float
    kept: int
    entropy: float
    final_entropy: float
    surprisal: float


@dataclass
class LookupRound:
    """One prompt-lookup round: the ``draft`` copied from the context and how many of it were ``accepted``."""

    draft: list[int]
    accepted: int


@dataclass
class LookupStats:
    """Prompt-lookup decoding's drafts: totals, tokens per model call, and the rounds."""

    drafted: int
    accepted: int
    tokens_per_call: float
    rounds: list[LookupRound] = field(default_factory=list)


@dataclass
class DecodeTrace:
    """A whole decoding run of one sequence: the prompt, the generated tokens and a trace per step
    (``steps``, one :class:`StepTrace` per token, when traced). ``lookup``: prompt-lookup decoding's drafts."""

    view: ClassVar[str] = "steps"
    strategy: str
    prompt: list[int]
    tokens: list[int]
    steps: list[StepTrace] = field(default_factory=list)
    text: str | None = None
    seed: int | None = None
    target_calls: int = 0
    lookup: LookupStats | None = None

    @property
    def n_steps(self) -> int:
        return len(self.tokens)

    def tokens_at(self, cursor: int) -> list[int]:
        return list(self.tokens[:max(cursor, 0)])

    def summary(self, labels: dict | None = None) -> str:
        extra = f", {self.lookup.tokens_per_call:.2f} tokens per call" if self.lookup and self.lookup.tokens_per_call \
            else ""
        return f"{(labels or {}).get(self.strategy, self.strategy)}: {len(self.tokens)} tokens, " \
               f"{self.target_calls} model calls{extra}"

    @property
    def entropies(self) -> list[float]:
        return [s.entropy for s in self.steps]

    @property
    def surprisals(self) -> list[float]:
        return [s.surprisal for s in self.steps]


@dataclass
class BeamNode:
    """A node of the beam tree: ``token`` appended to ``parent`` at ``step`` (root: step -1, token None).

    ``status``: ``"root"``, ``"running"`` (kept as a live beam), ``"finished"`` (became a hypothesis),
    ``"pruned"`` (a top-2k candidate that was not kept), ``"ended"`` (hit EOS/length but not good enough).
    ``cum_score`` is the parent's ``cum_score + transition_score`` in float32, as the search computed it;
    ``raw_logprob`` is the token's plain model log-probability (before any pipeline or diversity penalty).
    """

    id: int
    parent: int | None
    token: int | None
    step: int
    transition_score: float
    cum_score: float
    status: str = "running"
    group: int = 0
    raw_logprob: float = 0.0


@dataclass
class BeamHypothesis:
    """A finished beam: ``tokens`` generated after the prompt, ``score = raw_score / length ** length_penalty``.

    ``transition_scores[i]`` is the processed log-prob of ``tokens[i]`` given the prefix; their sum in order is
    ``raw_score``. ``logprob`` is the unpenalised model log-probability (differs from ``raw_score`` only when a
    pipeline or diversity penalty changed the scores).
    """

    tokens: list[int]
    score: float
    raw_score: float
    transition_scores: list[float]
    logprob: float
    node_ids: list[int]
    length_penalty: float
    group: int = 0

    @property
    def length(self) -> int:
        return len(self.tokens)


@dataclass
class BeamResult:
    """Beam search output: hypotheses best first, the whole tree, the search settings and how many steps the
    search ran (``search_steps``)."""

    view: ClassVar[str] = "beam"
    prompt: list[int]
    hypotheses: list[BeamHypothesis]
    nodes: list[BeamNode]
    num_beams: int
    length_penalty: float
    early_stopping: bool | str
    num_groups: int = 1
    diversity_penalty: float = 0.0
    search_steps: int = 0
    text: str | None = None

    @property
    def n_steps(self) -> int:
        return self.search_steps

    def tokens_at(self, cursor: int) -> list[int]:
        """The best hypothesis, once the cursor reaches the end of the search (nothing before)."""
        return list(self.best.tokens) if cursor >= self.search_steps else []

    def summary(self, labels: dict | None = None) -> str:
        h = self.best
        kind = "diverse beam" if self.num_groups > 1 else "beam"
        return (f"{kind}: best of {len(self.hypotheses)}: score {h.score:.3f} = {h.raw_score:.3f} / "
                f"{h.length}^{self.length_penalty:g}")

    @property
    def best(self) -> BeamHypothesis:
        return self.hypotheses[0]

    @property
    def tokens(self) -> list[int]:
        return self.hypotheses[0].tokens

    def path(self, node_id: int) -> list[BeamNode]:
        """Nodes from the root's child down to ``node_id``."""
        out = []
        while node_id is not None and self.nodes[node_id].parent is not None:
            out.append(self.nodes[node_id])
            node_id = self.nodes[node_id].parent
        return out[::-1]


@dataclass
class SpecRound:
    """One speculative round starting at generated position ``start``.

    ``draft_tokens`` with their target and draft probabilities ``p`` and ``q`` (after the pipeline);
    ``accepted[i]`` for each verified draft (verification stops at the first rejection); ``next_token`` is the
    residual sample (``kind == "residual"``) or the bonus token from ``p`` (``kind == "bonus"``).
    ``residual_top`` lists ``(token, prob)`` of ``norm(max(0, p - q))`` on rejection.
    """

    start: int
    draft_tokens: list[int]
    p: list[float]
    q: list[float]
    accept_prob: list[float]
    accepted: list[bool]
    n_accepted: int
    next_token: int
    kind: str
    residual_top: list[tuple[int, float]] = field(default_factory=list)
    emitted: list[int] = field(default_factory=list)


@dataclass
class SpeculativeStats:
    """Measured and predicted speculative-decoding figures.

    ``alpha``: accepted / verified drafts (the maximum-likelihood estimate of a constant acceptance rate).
    ``alpha_tv``: mean of ``sum_x min(p(x), q(x))`` over verified positions (the exact acceptance
    probability there, ``1 - TV(p, q)``). ``c``: draft cost / target cost per call (measured, or given).
    ``expected_tokens_per_call = (1 - a^(g+1)) / (1 - a)``; ``expected_speedup = that / (g c + 1)``.
    The measured ``c`` divides the mean one-token draft call by the mean verification call (``g + 1`` tokens),
    so it is slightly below the one-step ratio. ``draft_time_s`` / ``target_time_s``: time in all draft / target
    calls after the prefill; ``wall_time_s``: the whole run (the rest is sampling and bookkeeping).
    ``draft_step_s`` / ``verify_call_s``: mean one-token draft call (every draft call after the prefill if no
    round had one) and mean verification call of the full rounds (``g == gamma`` drafts), as timed inside the
    run (warm or cold caches as they really were).
    """

    gamma: int
    drafted: int
    verified: int
    accepted: int
    alpha: float
    alpha_tv: float
    target_calls: int
    draft_calls: int
    tokens: int
    tokens_per_call: float
    expected_tokens_per_call: float
    c: float
    expected_speedup: float
    draft_time_s: float = 0.0
    target_time_s: float = 0.0
    wall_time_s: float = 0.0
    draft_step_s: float = float("nan")
    verify_call_s: float = float("nan")

    @property
    def rounds(self) -> int:
        """The old name of :attr:`target_calls` (one verification call per round); the rounds themselves are
        :attr:`SpeculativeResult.rounds`."""
        return self.target_calls


@dataclass
class SpeculativeResult:
    """Speculative decoding output: the tokens, one :class:`SpecRound` per round (empty without a trace) and
    the run's :class:`SpeculativeStats`."""

    view: ClassVar[str] = "spec"
    prompt: list[int]
    tokens: list[int]
    rounds: list[SpecRound]
    stats: SpeculativeStats
    text: str | None = None

    @property
    def n_steps(self) -> int:
        return len(self.rounds)

    def tokens_at(self, cursor: int) -> list[int]:
        return [t for rd in self.rounds[:max(cursor, 0)] for t in rd.emitted]

    def summary(self, labels: dict | None = None) -> str:
        s = self.stats
        return (f"speculative: alpha={s.alpha:.3f}, {s.tokens_per_call:.2f} tokens per target call "
                f"(formula {s.expected_tokens_per_call:.2f}), c={s.c:.2f}, predicted speedup "
                f"{s.expected_speedup:.2f}x")


__all__ = [
    "DecodingResult", "LookupRound", "LookupStats", "StageSnapshot", "StepTrace", "DecodeTrace", "BeamNode",
    "BeamHypothesis", "BeamResult", "SpecRound", "SpeculativeStats", "SpeculativeResult",
]
