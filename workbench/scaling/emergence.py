"""Emergence under the microscope: score the same answers four ways (Schaeffer et al. 2023).

A model that gets more digits right as it grows looks like it "suddenly" learns addition under exact
match, and improves smoothly under per-token accuracy, token edit distance and the log-probability of
the right answer. :func:`score_addition` computes all four from one greedy pass and one teacher-forced
pass over the same problems, so the metrics differ only in how they score, never in what they score.

Lesson: ``notebooks/04_scaling_laws.ipynb`` (6. Emergence under the microscope).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import ScalingError


def token_edit_distance(a, b) -> int:
    """Levenshtein distance between two token sequences (insertions, deletions, substitutions cost 1)."""
    a, b = list(a), list(b)
    prev = np.arange(len(b) + 1)
    for i, x in enumerate(a, 1):
        cur = np.empty_like(prev)
        cur[0] = i
        for j, y in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
        prev = cur
    return int(prev[-1])


@dataclass(frozen=True)
class EmergenceScores:
    """Four scores of the same answers: mean exact match, mean per-token accuracy (greedy output vs target,
    position by position over the target's length), mean token edit distance, and the mean log-probability
    (nats) of the correct answer's tokens given the prompt. ``per_problem`` holds the per-answer values."""

    exact_match: float
    token_accuracy: float
    edit_distance: float
    answer_logprob: float
    n: int
    per_problem: dict = field(repr=False, compare=False, default_factory=dict)


def score_outputs(outputs, targets, answer_logprobs) -> EmergenceScores:
    """Score generated token sequences against targets; ``answer_logprobs`` is one number per problem."""
    outputs, targets = [list(o) for o in outputs], [list(t) for t in targets]
    lp = np.asarray(answer_logprobs, dtype=np.float64)
    if not (len(outputs) == len(targets) == len(lp)):
        raise ScalingError(f"need one output, target and log-prob per problem, got {len(outputs)}, "
                           f"{len(targets)}, {len(lp)}")
    if not outputs:
        raise ScalingError("no problems to score")
    if any(len(t) == 0 for t in targets):
        raise ScalingError("targets must not be empty")
    exact = np.array([o == t for o, t in zip(outputs, targets)], dtype=float)
    acc = np.array([sum(1 for i, x in enumerate(t) if i < len(o) and o[i] == x) / len(t)
                    for o, t in zip(outputs, targets)])
    edit = np.array([token_edit_distance(o, t) for o, t in zip(outputs, targets)], dtype=float)
    return EmergenceScores(exact_match=float(exact.mean()), token_accuracy=float(acc.mean()),
                           edit_distance=float(edit.mean()), answer_logprob=float(lp.mean()), n=len(targets),
                           per_problem={"exact": exact, "token_accuracy": acc, "edit_distance": edit,
                                        "logprob": lp})


def score_addition(model, problems, tokenizer=None, *, stop: str = "\n", max_extra: int = 2) -> EmergenceScores:
    """Greedy answers and answer log-probabilities of ``model`` on addition ``problems``, scored four ways.

    ``model`` follows the workbench interface (``model(ids).logits``); ``tokenizer`` defaults to the
    model's, else a byte tokenizer. Generation stops at ``stop`` or after ``len(answer) + max_extra``
    tokens.
    """
    import torch
    import torch.nn.functional as F

    if tokenizer is None:
        tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        from workbench.tokenizers import ByteTokenizer

        tokenizer = ByteTokenizer()
    stop_ids = tokenizer.encode(stop)
    outputs, targets, lps = [], [], []
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        with torch.no_grad():
            for p in problems:
                prompt = tokenizer.encode(p.prompt)
                answer = tokenizer.encode(p.answer)
                ids = torch.tensor([prompt + answer], dtype=torch.long)
                logp = F.log_softmax(model(ids).logits[0].double(), dim=-1)
                lps.append(float(sum(logp[len(prompt) - 1 + i, tok] for i, tok in enumerate(answer))))
                seq, out = list(prompt), []
                for _ in range(len(answer) + max_extra):
                    nxt = int(model(torch.tensor([seq], dtype=torch.long)).logits[0, -1].argmax())
                    if stop_ids and nxt == stop_ids[0]:
                        break
                    out.append(nxt)
                    seq.append(nxt)
                outputs.append(out)
                targets.append(answer)
    finally:
        if was_training and hasattr(model, "train"):
            model.train()
    return score_outputs(outputs, targets, lps)


def held_out_problems(n: int, digits: int, seen, seed: int = 1) -> list:
    """``n`` distinct addition problems whose ``(a, b)`` pair is not in ``seen`` (the training pairs).

    Scoring on problems the model was trained on measures memory, not addition; with few digits a large
    training set covers most pairs, so candidates are drawn in seeded rounds until ``n`` unseen ones are found.
    """
    from workbench.data.tasks import addition_problems

    seen = set(seen)
    if (10 ** digits) ** 2 - len(seen) < n:
        raise ScalingError(f"only {(10 ** digits) ** 2 - len(seen)} unseen {digits}-digit pairs left, need {n}")
    out, keys = [], set()
    for r in range(1000):
        for p in addition_problems(4 * n, digits, seed=seed + 7919 * r):
            k = (p.a, p.b)
            if k not in seen and k not in keys:
                keys.add(k)
                out.append(p)
                if len(out) == n:
                    return out
    raise ScalingError(f"found only {len(out)} unseen problems after 1000 rounds")  # pragma: no cover


def answer_batch(problems, tokenizer, *, stop: str = "\n"):
    """Inputs ``X`` and targets ``Y`` (both ``(n, width)`` long tensors), one problem per row.

    ``X`` holds ``prompt + answer + stop`` minus its last token, padded with the stop token; ``Y[i, t]`` is
    the token after position ``t`` where that token belongs to the answer or the stop, else -100 (ignored by
    the loss): the operands are never targets.
    """
    import torch

    stop_ids = tokenizer.encode(stop)
    rows = [(tokenizer.encode(p.prompt), tokenizer.encode(p.answer) + stop_ids) for p in problems]
    if not rows:
        raise ScalingError("no problems to train on")
    width = max(len(a) + len(b) for a, b in rows) - 1
    X = torch.full((len(rows), width), stop_ids[0], dtype=torch.long)
    Y = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (pr, ans) in enumerate(rows):
        full = pr + ans
        X[i, :len(full) - 1] = torch.tensor(full[:-1])
        Y[i, len(pr) - 1:len(full) - 1] = torch.tensor(ans)      # position t predicts token t + 1
    return X, Y


def train_on_answers(model, problems, tokenizer, *, steps: int, batch_size: int = 64, lr: float = 3e-3,
                     seed: int = 0, weight_decay: float = 0.0, stop: str = "\n") -> list:
    """Train ``model`` on whole problems, one per row, with the loss on the answer tokens and ``stop`` only.

    The operands of a random problem cannot be predicted, so next-token training on running text spends
    most of its signal on noise; supervising the answer alone (as in instruction tuning) lets tiny models
    learn the task within a notebook-sized budget. AdamW with warm-up and cosine decay; returns the loss of
    every step. Deterministic for a given ``seed`` and thread count.
    """
    import torch
    import torch.nn.functional as F

    from workbench.models.training import lr_at

    if steps < 1 or batch_size < 1:
        raise ScalingError(f"steps and batch_size must be >= 1, got {steps}, {batch_size}")
    X, Y = answer_batch(problems, tokenizer, stop=stop)
    if X.shape[1] > model.config.block_size:
        raise ScalingError(f"problems need {X.shape[1]} positions, the model has block_size {model.config.block_size}")
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=weight_decay)
    warmup = max(1, steps // 20)
    losses = []
    model.train()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr, warmup)
        idx = torch.randint(0, len(X), (batch_size,), generator=gen)
        logits = model(X[idx]).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), Y[idx].reshape(-1), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    return losses


@dataclass(frozen=True)
class EmergencePoint:
    """One model of an emergence sweep: its config, non-embedding parameter count ``N`` and scores."""

    config: dict
    N: int
    scores: EmergenceScores
    final_train_loss: float


def emergence_sweep(configs, *, digits: int = 3, steps: int = 600, n_train: int = 20000, n_test: int = 200,
                    batch_size: int = 32, lr: float = 3e-3, seed: int = 0, progress: bool = True,
                    objective: str = "text") -> list:
    """Train each config on ``digits``-digit addition (byte tokens) and score it four ways on ``n_test``
    held-out problems; returns :class:`EmergencePoint` s sorted by ``N``.

    objective "text": next-token prediction on running text, one ``a+b=c`` per line (the foundation's
    ``train``). objective "answer": one problem per row, loss on the answer only (:func:`train_on_answers`).
    """
    if objective not in ("text", "answer"):
        raise ScalingError(f"objective must be 'text' or 'answer', got {objective!r}")
    from dataclasses import asdict, is_dataclass

    import torch

    from workbench.data.tasks import addition_problems, addition_text
    from workbench.models import GPTConfig, TinyGPT, train
    from workbench.tokenizers import ByteTokenizer

    from .sweep import _count_params

    tok = ByteTokenizer()
    train_probs = addition_problems(n_train, digits, seed=seed)
    test_probs = held_out_problems(n_test, digits, {(p.a, p.b) for p in train_probs}, seed=seed + 1)
    ids = torch.tensor(tok.encode(addition_text(train_probs)), dtype=torch.long)
    out = []
    for c in configs:
        cfg = GPTConfig(**(asdict(c) if is_dataclass(c) else dict(c)))
        torch.manual_seed(seed)
        model = TinyGPT(cfg)
        if objective == "text":
            hist = train(model, ids, steps=steps, batch_size=batch_size, lr=lr, seed=seed, progress=progress,
                         desc=f"addition d={cfg.n_embd} L={cfg.n_layer}")
            final = float(hist.train_loss[-1])
        else:
            losses = train_on_answers(model, train_probs, tok, steps=steps, batch_size=batch_size, lr=lr, seed=seed)
            final = float(np.mean(losses[-max(1, steps // 20):]))
        out.append(EmergencePoint(config=asdict(cfg), N=_count_params(model)[0],
                                  scores=score_addition(model, test_probs, tok), final_train_loss=final))
    return sorted(out, key=lambda p: p.N)


#: The shipped emergence sweep (remade by ``python -m workbench.scaling.make_emergence``).
EMERGENCE_JSON = "emergence_addition.json"
METRICS = ("exact_match", "token_accuracy", "edit_distance", "answer_logprob")


def load_emergence(path=None) -> dict:
    """The shipped emergence sweep: ``{"settings": ..., "models": [...]}`` with one entry per model size
    (config, ``N``, the four mean scores, their standard errors under ``"sem"``), smallest first."""
    import json
    from pathlib import Path

    p = Path(path) if path is not None else Path(__file__).parent / "replays" / EMERGENCE_JSON
    if not p.exists():
        raise ScalingError(f"no emergence sweep at {p}; make it with python -m workbench.scaling.make_emergence")
    doc = json.loads(p.read_text())
    if doc.get("format") != "workbench.scaling.emergence" or doc.get("version") != 1:
        raise ScalingError(f"{p} is not a version-1 emergence sweep")
    doc["models"] = sorted(doc["models"], key=lambda m: m["N"])
    return doc
