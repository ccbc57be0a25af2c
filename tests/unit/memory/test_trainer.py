"""The memory lab's training loop: the masked loss against a hand computation, callbacks, determinism, bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from workbench.memory import ModelCapabilityError, SequenceTooLongError, TaskRangeError
from workbench.memory.tasks import IGNORE, RecallVocab, TaskBatch, recall_batch
from workbench.memory.trainer import build_model, check_length, masked_loss, state_numbers, train_masked


def _recurrent_available():
    try:
        import workbench.models.recurrent  # noqa: F401
    except ImportError:
        return False
    return True


def test_masked_loss_is_the_mean_over_scored_positions_only():
    m = build_model("transformer", 11, 8, width=16, n_layer=1, seed=0)
    x = torch.randint(0, 11, (3, 8), generator=torch.Generator().manual_seed(0))
    y = torch.full((3, 8), IGNORE)
    y[0, 2], y[1, 7], y[2, 0] = 4, 9, 1
    logp = F.log_softmax(m(x).logits, -1)
    want = -(logp[0, 2, 4] + logp[1, 7, 9] + logp[2, 0, 1]) / 3
    assert torch.allclose(masked_loss(m, TaskBatch(x, y, {})), want, atol=1e-6)


def _sample(rng):
    return recall_batch(rng, 8, 2, RecallVocab(4, 4))


def test_training_callbacks_and_determinism():
    seen, reports = [], []
    m1 = build_model("transformer", RecallVocab(4, 4).size, 16, width=16, n_layer=1, seed=3)
    log = train_masked(m1, _sample, 12, every=5, seed=1, evaluate=lambda m: 7, progress=lambda d, t: seen.append((d, t)),
                       report=reports.append)
    assert seen == [(i, 12) for i in range(1, 13)]
    assert [c.step for c in log.checkpoints] == [5, 10, 12] and [c.step for c in reports] == [5, 10, 12]
    assert all(c.metrics == 7 for c in log.checkpoints) and not log.stopped and log.steps == 12
    m2 = build_model("transformer", RecallVocab(4, 4).size, 16, width=16, n_layer=1, seed=3)
    train_masked(m2, _sample, 12, every=5, seed=1)
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(a, b)


def test_should_stop_ends_the_run_with_a_last_checkpoint():
    calls = []

    def stop():
        calls.append(1)
        return len(calls) > 4

    m = build_model("transformer", RecallVocab(4, 4).size, 16, width=16, n_layer=1)
    log = train_masked(m, _sample, 100, every=50, should_stop=stop)
    assert log.stopped and log.steps == 4 and [c.step for c in log.checkpoints] == [4]


def test_training_lowers_the_masked_loss():
    m = build_model("transformer", RecallVocab(4, 4).size, 16, width=32, n_layer=2, seed=0)
    b = recall_batch(np.random.default_rng(99), 64, 2, RecallVocab(4, 4))
    before = masked_loss(m, b).item()
    train_masked(m, _sample, 60, lr=1e-2)
    assert masked_loss(m, b).item() < 0.6 * before


def test_bad_input():
    with pytest.raises(ModelCapabilityError, match="unknown architecture"):
        build_model("lstm", 10, 8)
    with pytest.raises(ModelCapabilityError, match="no fixed state size"):
        build_model("transformer", 10, 8, state_size=4)
    with pytest.raises(TaskRangeError, match="vocab_size"):
        build_model("transformer", 0, 8)
    m = build_model("transformer", 10, 8, width=16, n_layer=1)
    with pytest.raises(SequenceTooLongError, match="longer than the 8"):
        check_length(m, TaskBatch(torch.zeros(1, 9, dtype=torch.long), torch.zeros(1, 9, dtype=torch.long), {}))
    with pytest.raises(ModelCapabilityError, match="vocabulary"):
        check_length(m, TaskBatch(torch.full((1, 4), 10), torch.zeros(1, 4, dtype=torch.long), {}))
    with pytest.raises(TaskRangeError, match="steps"):
        train_masked(m, _sample, 0)
    assert state_numbers(m) is None


@pytest.mark.skipif(not _recurrent_available(), reason="the recurrent model is not in this tree yet")
def test_recurrent_model_state_size_and_training():
    m = build_model("recurrent", RecallVocab(4, 4).size, 16, width=16, n_layer=1, state_size=4)
    assert m.config.d_state == 4 and state_numbers(m) == 4 * 16
    log = train_masked(m, _sample, 3, every=2)
    assert log.steps == 3 and np.isfinite(log.final_loss)
    with pytest.raises(TaskRangeError, match="state_size"):
        build_model("recurrent", 10, 8, width=16, n_layer=1, state_size=0)


@pytest.mark.parametrize("arch,state", [("transformer", None)] + ([("recurrent", 4)] if _recurrent_available() else []))
def test_torch_init_unties_the_head_and_draws_pytorch_scales(arch, state):
    """``init="torch"`` (the recall experiment's): untied output head, embeddings N(0, 1), Linear weights
    Kaiming-uniform (within 1 / sqrt(fan_in)); the default ``"gpt2"`` keeps the models' own tied N(0, 0.02)."""
    kw = {"width": 32, "n_layer": 2, "state_size": state, "seed": 5}
    own = build_model(arch, 40, 16, **kw)
    m = build_model(arch, 40, 16, init="torch", **kw)
    assert own.lm_head.weight is own.wte.weight and abs(own.wte.weight.std().item() - 0.02) < 0.005
    assert m.lm_head.weight is not m.wte.weight and abs(m.wte.weight.std().item() - 1.0) < 0.1
    for mod in m.modules():
        if isinstance(mod, torch.nn.Linear):
            assert mod.weight.abs().max() <= 1 / mod.in_features ** 0.5 + 1e-6
    again = build_model(arch, 40, 16, init="torch", **kw)
    assert all(torch.equal(a, b) for a, b in zip(m.parameters(), again.parameters()))  # seeded
    with pytest.raises(TaskRangeError, match="initialisation"):
        build_model(arch, 40, 16, init="xavier", **kw)
