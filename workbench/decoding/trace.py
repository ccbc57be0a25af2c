"""Result dataclasses that flow from the decoding core to widgets and notebooks.

* :class:`StepTrace` / :class:`DecodeTrace`: one sampled or greedy step: the raw distribution's top
  candidates, their probabilities after each pipeline stage, kept-set size, entropy, surprisal, the choice.
* :class:`BeamNode` / :class:`BeamHypothesis` / :class:`BeamResult`: the beam tree. Each node stores the
  transition score of its token (the processed log-probability, as HF's ``compute_transition_scores``) and
  the cumulative score; a hypothesis' transition scores, summed in step order, equal its raw score exactly
  (the same float32 additions the search made), and ``raw_score / length ** length_penalty`` is its score.
* :class:`SpecRound` / :class:`SpeculativeStats` / :class:`SpeculativeResult`: speculative decoding rounds.

Entropies and surprisals are in bits; log-probabilities and beam scores in nats (as HF reports them).
"""
from __future__ import annotations

from dataclasses import dataclass, field


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
class DecodeTrace:
    """A whole decoding run of one sequence: the prompt, the generated tokens and a trace per step."""

    strategy: str
    prompt: list[int]
    tokens: list[int]
    steps: list[StepTrace] = field(default_factory=list)
    text: str | None = None
    seed: int | None = None
    target_calls: int = 0
    stats: dict = field(default_factory=dict)

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
    """Beam search output: hypotheses best first, the whole tree, and the search settings."""

    prompt: list[int]
    hypotheses: list[BeamHypothesis]
    nodes: list[BeamNode]
    num_beams: int
    length_penalty: float
    early_stopping: bool | str
    num_groups: int = 1
    diversity_penalty: float = 0.0
    steps: int = 0
    text: str | None = None

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
    prompt: list[int]
    tokens: list[int]
    rounds: list[SpecRound]
    stats: SpeculativeStats
    text: str | None = None


__all__ = [
    "StageSnapshot", "StepTrace", "DecodeTrace", "BeamNode", "BeamHypothesis", "BeamResult", "SpecRound",
    "SpeculativeStats", "SpeculativeResult",
]
