"""Distillation: train the micro model on hard labels or on the softened distribution of one or more teachers.

Claim (BabyLlama-2, Tastet & Timiryasov 2024): with limited data, a small student distilled from an ensemble of
teachers (loss = (1 - alpha) * cross-entropy on the next token + alpha * T^2 * KL(teacher_T || student_T), the
teachers' logits averaged, alpha = 0.5, T = 2) reaches a lower loss than training on the hard labels alone, even
below its teachers. Here the teachers are the shipped ``docs-byte`` (826k parameters) and ``docs-byte-draft``,
the student the 2-layer micro model, and every arm trains on the same windows for the same tokens; what this
scale shows is in ``sweeps/DATALAB.md`` and :func:`load_distill`.

:func:`train_student` is the training loop of every data-lab experiment: with no teacher (or ``alpha = 0``) it
takes exactly the steps of :func:`workbench.models.train` (same windows, schedule and optimizer, the same weights
for the same seed: tested), and adds what a live run needs (a ``progress(done, total)`` callback and
``should_stop``) and validation on several held-out sets.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .errors import DataLabError
from .recipes import BOS, byte_tokenizer, corpus_split, curves_by_seed, index_runs, micro_model, read_sweep_file


class TeacherMismatchError(DataLabError):
    """A teacher whose tokenizer or vocabulary differs from the student's: its distribution is over other tokens."""


@dataclass
class StudentHistory:
    """What :func:`train_student` returns. ``val_loss[name]`` is the loss (nats/token) on validation set
    ``name`` at each of ``steps``; ``train_loss`` the running training loss there (the objective: mixed with
    the teacher term when distilling). ``stopped`` is True when ``should_stop`` ended training early."""

    steps: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)
    val_loss: dict = field(default_factory=dict)
    tokens_seen: int = 0
    cpu_s: float = 0.0
    stopped: bool = False


def check_teacher(teacher, student_tokenizer, student_vocab: int) -> None:
    """Raise :class:`TeacherMismatchError` unless ``teacher`` has the student's tokenizer and vocabulary size."""
    tok = getattr(teacher, "tokenizer", None)
    if tok is None:
        raise TeacherMismatchError("the teacher has no tokenizer; distillation needs the student's tokenizer")
    if type(tok) is not type(student_tokenizer) or tok.to_dict() != student_tokenizer.to_dict():
        raise TeacherMismatchError(f"the teacher's tokenizer {tok!r} differs from the student's "
                                   f"{student_tokenizer!r}; use a teacher with the same tokenizer")
    if teacher.config.vocab_size != student_vocab:
        raise TeacherMismatchError(f"the teacher's vocabulary has {teacher.config.vocab_size} ids, the "
                                   f"student's {student_vocab}; they must be equal")


def distill_loss(student_logits, targets, teacher_logits=None, alpha: float = 0.0, temperature: float = 1.0):
    """``(1 - alpha) * CE(student, targets) + alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))``.

    student_logits, teacher_logits: ``(B, T, V)``; targets ``(B, T)``. The KL is averaged over positions; the
    ``T^2`` factor keeps its gradient on the scale of the hard loss (Hinton et al. 2015).
    """
    import torch.nn.functional as F

    hard = F.cross_entropy(student_logits.flatten(0, 1), targets.flatten())
    if teacher_logits is None or alpha == 0.0:
        return hard
    t = float(temperature)
    log_q = F.log_softmax(student_logits.flatten(0, 1) / t, dim=-1)
    log_p = F.log_softmax(teacher_logits.flatten(0, 1) / t, dim=-1)
    kl = F.kl_div(log_q, log_p, log_target=True, reduction="batchmean")
    return (1.0 - alpha) * hard + alpha * t * t * kl


def train_student(model, train_ids, steps: int, batch_size: int = 16, lr: float = 3e-3, *, val_sets=None,
                  teachers=(), alpha: float = 0.0, temperature: float = 2.0, bos: int | None = BOS,
                  eval_every: int | None = None, eval_tokens: int = 8_192, seed: int = 0, warmup=None,
                  weight_decay: float = 0.1, betas=(0.9, 0.95), grad_clip: float = 1.0, progress=None,
                  should_stop=None) -> StudentHistory:
    """Train ``model`` on random windows of ``train_ids`` (1-D ids), on hard labels or distilled from ``teachers``.

    teachers: models with the student's tokenizer (checked by the caller: :func:`check_teacher`); their logits
    on the same input windows are averaged (ensemble distillation as in BabyLlama-2) and enter
    :func:`distill_loss` with ``alpha`` and ``temperature``. val_sets: ``{name: 1-D ids}``, each evaluated with
    :func:`workbench.models.evaluate` (first ``eval_tokens`` tokens) every ``eval_every`` steps and at the end.
    progress: ``progress(done_steps, steps)`` after every step; should_stop: a callable checked before every step.
    """
    import torch

    from workbench.models.training import _as_ids, apply_gradients, evaluate, random_windows, set_lr, training_setup

    if steps < 1 or batch_size < 1:
        raise DataLabError(f"steps and batch_size must be >= 1, got {steps}, {batch_size}")
    if not 0.0 <= alpha <= 1.0:
        raise DataLabError(f"alpha (the weight of the teacher term) must be in [0, 1], got {alpha}")
    if temperature <= 0:
        raise DataLabError(f"temperature must be > 0, got {temperature}")
    if alpha > 0 and not teachers:
        raise DataLabError(f"alpha = {alpha} needs at least one teacher")
    data = _as_ids(np.array(train_ids) if isinstance(train_ids, np.ndarray) else train_ids)
    block = model.config.block_size
    if len(data) < block + 2:
        raise DataLabError(f"training data has {len(data)} tokens; need more than block_size + 1 = {block + 1}")
    vals = {k: _as_ids(np.array(v) if isinstance(v, np.ndarray) else v) for k, v in (val_sets or {}).items()}
    warmup = max(1, steps // 20) if warmup is None else warmup
    eval_every = eval_every or max(1, steps // 8)
    for t in teachers:
        t.eval()

    c0 = time.process_time()
    opt, gen = training_setup(model, seed, lr, weight_decay, betas)  # seeds, sampler, optimizer: as train's
    hist = StudentHistory(val_loss={k: [] for k in vals})
    model.train()
    running = None
    for step in range(steps):
        if should_stop is not None and should_stop():
            hist.stopped = True
            break
        set_lr(opt, step, steps, lr, warmup)
        x, y = random_windows(data, batch_size, block, gen, bos)     # (B, block) each
        logits = model(x).logits                                     # (B, block, V)
        teacher_logits = None
        if teachers and alpha > 0:
            with torch.no_grad():
                teacher_logits = torch.stack([t(x).logits.float() for t in teachers]).mean(0)
        loss = distill_loss(logits, y, teacher_logits, alpha, temperature)
        running = apply_gradients(model, opt, loss, grad_clip, running)
        hist.tokens_seen += x.numel()
        if (step + 1) % eval_every == 0 or step == steps - 1:
            hist.steps.append(step + 1)
            hist.train_loss.append(running)
            for k, v in vals.items():
                hist.val_loss[k].append(evaluate(model, v, block, max_tokens=eval_tokens, bos=bos))
            model.train()
        if progress is not None:
            progress(step + 1, steps)
    model.eval()
    hist.cpu_s = time.process_time() - c0
    return hist


def load_teachers(names) -> list:
    """Load shipped teachers by name and check each has the byte tokenizer of the micro student."""
    from workbench.models import load_pretrained

    out = []
    for name in names:
        m = load_pretrained(name)
        check_teacher(m, byte_tokenizer(), 258)
        out.append(m)
    return out


#: The arms of the shipped experiment: (name, teachers, alpha, temperature).
ARMS = (("hard labels", (), 0.0, 1.0),
        ("distilled from docs-byte", ("docs-byte",), 0.5, 2.0),
        ("ensemble docs-byte + draft", ("docs-byte", "docs-byte-draft"), 0.5, 2.0))


def micro_run(settings, train_ids, *, progress=None, should_stop=None, **student) -> dict:
    """One data-lab run: a fresh micro model (``settings.config``, initialised from ``settings.seed``) trained by
    :func:`train_student` on ``train_ids`` for ``settings.steps`` steps (``student``: its other options, e.g.
    teachers), validated on the held-out ``python-docs`` split. Returns ``steps``, ``train_loss``, ``val_loss``
    (the held-out curve), ``cpu_s`` and ``stopped``: what every data-lab experiment stores per run."""
    _, val_ids = corpus_split("python-docs")
    model = micro_model(settings.config, settings.seed)
    h = train_student(model, train_ids, settings.steps, settings.batch_size, settings.lr, val_sets={"docs": val_ids},
                      seed=settings.seed, progress=progress, should_stop=should_stop, **student)
    return {"steps": h.steps, "train_loss": h.train_loss, "val_loss": h.val_loss["docs"], "cpu_s": h.cpu_s,
            "stopped": h.stopped}


def distill_run(settings, *, teachers=(), alpha: float = 0.0, temperature: float = 2.0, progress=None,
                should_stop=None) -> dict:
    """One run: the micro model on ``python-docs`` (train split), hard or distilled; returns curves and the
    final validation loss on the held-out split (the teachers never saw it either)."""
    train_ids, _ = corpus_split("python-docs")
    return micro_run(settings, train_ids, teachers=load_teachers(teachers), alpha=alpha, temperature=temperature,
                     progress=progress, should_stop=should_stop)


@dataclass
class DistillResult:
    """Validation loss (nats/byte on held-out ``python-docs``) of each arm and seed.

    arms: names; settings: ``(teachers, alpha, temperature)`` per arm; steps: the evaluation steps;
    curves: ``(arms, seeds, len(steps))``; final: ``(arms, seeds)``; mean, sd: over seeds ``(arms,)``;
    teacher_loss: each teacher's own loss on the same validation text.
    """

    arms: list
    settings: list
    seeds: list
    steps: np.ndarray
    curves: np.ndarray
    final: np.ndarray
    mean: np.ndarray
    sd: np.ndarray
    teacher_loss: dict
    stopped: bool = False

    def gain_over_hard(self) -> np.ndarray:
        """Mean final loss of the hard-label arm minus each arm's (positive: better than hard labels)."""
        return self.mean[0] - self.mean


def teacher_losses(names, eval_tokens: int = 8_192) -> dict:
    """Each teacher's loss on the first ``eval_tokens`` of the held-out docs split, in 64-token windows with BOS
    (what the students are scored on)."""
    from workbench.models.training import evaluate

    _, val_ids = corpus_split("python-docs")
    return {n: evaluate(m, val_ids, 64, max_tokens=eval_tokens, bos=BOS)
            for n, m in zip(names, load_teachers(names))}


def _result(arms, settings, seeds, runs, stopped=False) -> DistillResult:
    curves, final, mean, sd = curves_by_seed(runs, arms, seeds)
    names = sorted({t for st in settings for t in st[0]})
    return DistillResult(arms=list(arms), settings=list(settings), seeds=list(seeds),
                         steps=np.asarray(runs[(arms[0], seeds[0])]["steps"]), curves=curves, final=final,
                         mean=mean, sd=sd, teacher_loss=teacher_losses(names), stopped=stopped)


def run_distillation(arms=ARMS, seeds=(0,), steps: int = 60, batch_size: int = 16, lr: float = 3e-3,
                     progress=None, should_stop=None) -> DistillResult:
    """A live run (seconds): each arm ``(name, teachers, alpha, temperature)`` for each seed, equal tokens.

    progress: ``progress(done_steps, total_steps)`` over the whole experiment; should_stop: a callable; when it
    returns True the arms finished so far are returned (``stopped=True``).
    """
    from .recipes import MICRO_CONFIG, RunSettings

    arms = [tuple(a) for a in arms]
    if not arms:
        raise DataLabError("arms must not be empty")
    total = len(arms) * len(seeds) * steps
    runs, done_arms = {}, []
    for i, (name, teachers, alpha, temp) in enumerate(arms):
        for j, seed in enumerate(seeds):
            base = (i * len(seeds) + j) * steps
            r = distill_run(RunSettings(MICRO_CONFIG, steps, batch_size, lr, seed), teachers=teachers,
                            alpha=alpha, temperature=temp, should_stop=should_stop,
                            progress=None if progress is None else (lambda d, _t, b=base: progress(b + d, total)))
            if r["stopped"]:
                break
            runs[(name, seed)] = r
        else:
            done_arms.append((name, teachers, alpha, temp))
            continue
        break
    if not done_arms:
        raise DataLabError("stopped before the first arm finished; nothing to show")
    return _result([a[0] for a in done_arms], [a[1:] for a in done_arms], list(seeds), runs,
                   stopped=len(done_arms) < len(arms))


def distill_from_runs(runs: list, teacher_loss: dict | None = None) -> DistillResult:
    """Assemble a :class:`DistillResult` from run dicts (``arm``, ``teachers``, ``alpha``, ``temperature``,
    ``seed``, ``steps``, ``val_loss``), as stored in the shipped sweep."""
    arms, seeds, table = index_runs(runs, "arm", "distillation")
    settings = [(tuple(table[(a, seeds[0])]["teachers"]), table[(a, seeds[0])]["alpha"],
                 table[(a, seeds[0])]["temperature"]) for a in arms]
    curves, final, mean, sd = curves_by_seed(table, arms, seeds)
    return DistillResult(arms=arms, settings=settings, seeds=seeds,
                         steps=np.asarray(table[(arms[0], seeds[0])]["steps"]), curves=curves, final=final,
                         mean=mean, sd=sd, teacher_loss=dict(teacher_loss or {}))


def load_distill(path=None) -> DistillResult:
    """The shipped distillation sweep (``sweeps/distill.json``), validated."""
    from .recipes import SWEEP_DIR

    doc = read_sweep_file(path or SWEEP_DIR / "distill.json", "distill",
                          ("arm", "teachers", "alpha", "temperature", "seed", "steps", "val_loss"),
                          ("teacher_loss",))
    return distill_from_runs(doc["runs"], doc["settings"]["teacher_loss"])
