"""Linear probes on the residual stream: at which layer boundary can a logistic regression read a label?

:func:`probe` encodes the texts, labels every token with a labeller (see :mod:`.labellers`), runs the model once per
context-sized window, and fits one scikit-learn ``LogisticRegression`` (on standardised features) per boundary
(``embed``, then after each block) on a deterministic, stratified split of the labelled tokens. Held-out accuracy by
layer, against the majority-class baseline, is the answer; a PCA of the held-out vectors at one layer, coloured by
label, is the picture.

>>> from workbench.models import TinyGPT, GPTConfig
>>> from workbench.tokenizers import ByteTokenizer
>>> from workbench.residual.labellers import is_digit
>>> m = TinyGPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=64, vocab_size=257), ByteTokenizer()).eval()
>>> r = probe(m, ["a1 b22 c333 d4 e5 f66 g7 h8 i99 j0 k1 l2"] * 3, is_digit, layer=0)
>>> r.boundaries, r.pca.shape[1], bool(r.test_acc[0] > r.majority)
(['embed', 'block 0', 'block 1'], 2, True)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..models.layout import layout_of
from .errors import ResidualError
from .neurons import windows
from .run import check_index, residual_stack


class ProbeLabelError(ResidualError):
    """Labels a probe cannot learn from: one class only, too few labelled tokens, or the wrong shape."""


@dataclass
class ProbeResult:
    """A probe per layer boundary. ``boundaries`` (L + 1 names); ``train_acc``, ``test_acc``,
    ``test_balanced_acc`` ``(L + 1,)``; ``majority``: held-out accuracy of always guessing the training majority
    class (the baseline to beat); ``pca`` ``(N_test, 2)``: held-out residual vectors at ``layer`` projected on the
    training set's first two principal components, ``pca_labels`` ``(N_test,)`` their labels; ``label_names``;
    ``n_train``, ``n_test``; ``class_counts`` (all labelled tokens, per class)."""

    boundaries: list
    train_acc: np.ndarray
    test_acc: np.ndarray
    majority: float
    pca: np.ndarray
    pca_labels: np.ndarray
    layer: int
    label_names: list
    test_balanced_acc: np.ndarray | None = None
    n_train: int = 0
    n_test: int = 0
    class_counts: dict | None = None
    pca_explained: np.ndarray | None = None

    @property
    def best_layer(self) -> int:
        return int(np.argmax(self.test_acc))


@torch.no_grad()
def labelled_residuals(model, texts, labeller, max_tokens: int = 4000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The residual stream at every boundary for the labelled tokens of ``texts``, in order, up to ``max_tokens``:
    ``(X (L + 1, N, D) float32, y (N,) int, text_index (N,) int)``. Each text is encoded whole (so the labeller sees
    it whole) and run in context-sized windows."""
    if isinstance(texts, str):
        texts = [texts]
    texts = [t for t in texts if isinstance(t, str) and t]
    if not texts:
        raise ResidualError("no text to probe: give a list of non-empty texts")
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        raise ResidualError("this model has no tokenizer: a probe labels tokens of text")
    xs, ys, groups, left = [], [], [], int(max_tokens)
    if left < 4:
        raise ResidualError(f"max_tokens must be at least 4, got {max_tokens}")
    for ti, text in enumerate(texts):
        ids = torch.as_tensor(list(tok.encode(text)), dtype=torch.long)
        labels = np.asarray(labeller(model, text, ids.tolist()), dtype=np.int64)
        if labels.shape != (len(ids),):
            raise ProbeLabelError(f"the labeller gave {labels.shape} labels for {len(ids)} tokens: it must return "
                                  "one int per token (-1 to skip a token)")
        for start, piece in windows(model, ids):
            extra = 1 if start > 0 and int(piece[0]) == getattr(tok, "bos_id", None) else 0
            lab = labels[start:start + len(piece) - extra]
            keep = np.nonzero(lab >= 0)[0]
            if keep.size == 0:
                continue
            keep = keep[:left]
            rs = residual_stack(model, piece[None])
            xs.append(rs.resid[:, 0, keep + extra].cpu().numpy().astype(np.float32))
            ys.append(lab[keep])
            groups.append(np.full(keep.size, ti, dtype=np.int64))
            left -= keep.size
            if left <= 0:
                break
        if left <= 0:
            break
    if not ys:
        raise ProbeLabelError("the labeller skipped every token (all labels -1): nothing to probe")
    return np.concatenate(xs, axis=1), np.concatenate(ys), np.concatenate(groups)


def split(y: np.ndarray, test_fraction: float, seed: int, groups: np.ndarray | None = None
          ) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic train/test indices of labels ``y``: stratified by label (scikit-learn's ``train_test_split``),
    or, given ``groups`` (one id per item), whole groups to one side (``GroupShuffleSplit``), so that no test token
    shares a text with a training token."""
    from sklearn.model_selection import GroupShuffleSplit, train_test_split

    if not 0.0 < float(test_fraction) < 1.0:
        raise ResidualError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if groups is not None:
        if np.unique(groups).size < 2:
            raise ResidualError("a split by text needs at least two texts with labelled tokens")
        gss = GroupShuffleSplit(n_splits=1, test_size=float(test_fraction), random_state=int(seed))
        tr, te = next(gss.split(np.zeros(len(y)), y, groups))
        return np.sort(tr), np.sort(te)
    idx = np.arange(len(y))
    counts = np.bincount(y)
    strat = y if counts[counts > 0].min() >= 2 else None
    tr, te = train_test_split(idx, test_size=float(test_fraction), random_state=int(seed), stratify=strat)
    return np.sort(tr), np.sort(te)


def probe(model, texts, labeller, layer: int | None = None, test_fraction: float = 0.3, seed: int = 0,
          max_tokens: int = 4000, C: float = 1.0, class_weight=None, split_by: str = "token") -> ProbeResult:
    """Fit a logistic-regression probe (L2, strength ``1/C``, standardised features) at every layer boundary on the
    tokens ``labeller`` labels in ``texts`` (at most ``max_tokens``), and score it on a held-out ``test_fraction``
    (split stratified, fixed by ``seed``). The PCA picture is taken at ``layer`` (a boundary index: 0 = embed,
    ``i + 1`` = after block ``i``; default the best held-out boundary). ``class_weight="balanced"`` weighs a rare
    class up (then compare ``test_balanced_acc`` with 0.5 rather than ``test_acc`` with ``majority``).
    ``split_by="text"`` holds out whole texts instead of random tokens: neighbouring tokens share context, so a
    token split flatters features that are read off the surroundings."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if split_by not in ("token", "text"):
        raise ResidualError(f"split_by must be 'token' or 'text', got {split_by!r}")
    n_b = layout_of(model).n_layer + 1
    if layer is not None:
        layer = check_index("layer boundary", layer, n_b)
    X, y, groups = labelled_residuals(model, texts, labeller, max_tokens)
    classes = np.unique(y)
    names = list(getattr(labeller, "label_names", ()) or [])
    if classes.size < 2:
        shown = names[classes[0]] if classes[0] < len(names) else str(classes[0])
        raise ProbeLabelError(f"every labelled token has the same label ({shown!r}, {len(y)} tokens): a probe needs "
                              "at least two classes; give texts where both occur")
    counts = np.bincount(y)
    if counts[classes].min() < 2 or len(y) < 10:
        raise ProbeLabelError(f"too few labelled tokens to split ({dict(enumerate(counts.tolist()))}): need at least "
                              "10 tokens and 2 of every class")
    tr, te = split(y, test_fraction, seed, groups if split_by == "text" else None)
    if np.unique(y[tr]).size < 2 or te.size == 0:
        raise ProbeLabelError("the training split holds one class only (or the test split is empty): give more "
                              "texts, or more tokens of the rare class")
    train_acc, test_acc, bal = np.zeros(n_b), np.zeros(n_b), np.zeros(n_b)
    for b in range(n_b):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=float(C), max_iter=2000, class_weight=class_weight))
        clf.fit(X[b, tr], y[tr])
        train_acc[b] = clf.score(X[b, tr], y[tr])
        pred = clf.predict(X[b, te])
        test_acc[b] = float(np.mean(pred == y[te]))
        bal[b] = balanced_accuracy_score(y[te], pred)
    majority_class = np.bincount(y[tr]).argmax()
    majority = float(np.mean(y[te] == majority_class))
    at = int(np.argmax(test_acc)) if layer is None else layer
    pca = PCA(n_components=2, random_state=int(seed)).fit(X[at, tr])
    names = [names[c] if c < len(names) else str(c) for c in range(int(classes.max()) + 1)]
    boundaries = ["embed"] + [f"block {i}" for i in range(n_b - 1)]
    return ProbeResult(boundaries, train_acc, test_acc, majority, pca.transform(X[at, te]), y[te], at, names, bal,
                       len(tr), len(te), {int(c): int(counts[c]) for c in classes}, pca.explained_variance_ratio_)


__all__ = ["ProbeLabelError", "ProbeResult", "labelled_residuals", "probe", "split"]
