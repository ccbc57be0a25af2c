"""Shared text and the plain recomputation for the attention tests (their model: tests.factories.attention_gpt)."""
import torch


TEXT = "the cat sat on the mat; the cat sat on the hat."


def explicit_forward(m, ids, allowed=None):
    """The TinyGPT ``m`` recomputed by the plain reference (:mod:`workbench.models.reference`) under a key mask
    ``allowed`` ``(T, T)`` bool (default causal), with absolute positions 0..T-1 whatever the context.
    Returns every layer's attention probabilities ``(L, H, T, T)`` and the logits ``(T, V)``."""
    from workbench.models.reference import ReferenceGPT

    ref = ReferenceGPT(m.config).load_tinygpt(m).eval()
    with torch.no_grad():
        logits, att, _ = ref(torch.as_tensor([ids]), mask_fn=None if allowed is None else lambda q, k: allowed,
                             capture=True)
    return att[:, 0], logits[0]


def explicit_logits(m, ids, allowed):
    """Logits ``(T, V)`` of :func:`explicit_forward`."""
    return explicit_forward(m, ids, allowed)[1]
