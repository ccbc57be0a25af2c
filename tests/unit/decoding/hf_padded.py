"""A tiny HF model of a family whose logits favour padding ids (ids the tokenizer cannot decode).

``padded_model("gpt2")`` builds a fresh model with ``tests.hf_families`` and adds +6 to logit 301 and +3 to logit 310
with a forward hook on the output embedding, so HF ``generate`` sees the same logits as the workbench adapter:
padding ids lead the top-k and get sampled, as they can in real padded checkpoints with unlucky prompts.
"""
from __future__ import annotations

from tests import hf_families as F

PUSHED = {301: 6.0, 310: 3.0}


def padded_model(family: str, seed: int = 3, pushed: dict | None = None):
    from workbench.models import from_hf

    pushed = PUSHED if pushed is None else pushed
    hf = F.build(family, seed=seed)

    def push(mod, inp, logits):
        logits = logits.clone()
        for i, v in pushed.items():
            logits[..., i] += v
        return logits

    hf.get_output_embeddings().register_forward_hook(push)
    return from_hf(hf, tokenizer=F.hf_tokenizer())
