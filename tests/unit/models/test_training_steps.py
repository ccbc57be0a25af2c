"""The training-step helpers that ``train`` and the data lab's ``train_student`` share (``training_setup``,
``set_lr``, ``apply_gradients``)."""
import pytest
import torch

from workbench.models import GPTConfig, TinyGPT
from workbench.models.training import apply_gradients, lr_at, set_lr, training_setup


def tiny():
    torch.manual_seed(0)
    return TinyGPT(GPTConfig(vocab_size=16, n_layer=1, n_head=1, n_embd=8, block_size=8))


def test_setup_groups_weight_decay_and_seeds_the_sampler():
    m = tiny()
    opt, gen = training_setup(m, seed=5, lr=1e-3, weight_decay=0.25)
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 0.25 and plain["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decayed["params"]) and all(p.dim() < 2 for p in plain["params"])
    assert len(decayed["params"]) + len(plain["params"]) == len(list(m.parameters()))
    _, gen2 = training_setup(m, seed=5, lr=1e-3)
    assert torch.equal(torch.randint(0, 100, (8,), generator=gen), torch.randint(0, 100, (8,), generator=gen2))


def test_set_lr_follows_the_schedule_in_every_group():
    opt, _ = training_setup(tiny(), seed=0, lr=1.0)
    for step in (0, 3, 50, 99):
        cur = set_lr(opt, step, 100, 1.0, warmup=5)
        assert cur == lr_at(step, 100, 1.0, 5) and all(g["lr"] == cur for g in opt.param_groups)


def test_apply_gradients_steps_clips_and_smooths():
    m = tiny()
    opt, _ = training_setup(m, seed=0, lr=0.1)
    before = [p.detach().clone() for p in m.parameters()]
    loss = 1000.0 * sum((p ** 2).sum() for p in m.parameters())  # a huge gradient: clipped to norm 1
    running = apply_gradients(m, opt, loss, grad_clip=1.0, running=None)
    assert running == pytest.approx(loss.item())
    norm = torch.sqrt(sum((p.grad ** 2).sum() for p in m.parameters()))
    assert float(norm) == pytest.approx(1.0, rel=1e-4)
    assert any(not torch.equal(a, p) for a, p in zip(before, m.parameters()))
    loss2 = sum(p.sum() for p in m.parameters())
    assert apply_gradients(m, opt, loss2, 0.0, running=2.0) == pytest.approx(0.9 * 2.0 + 0.1 * loss2.item())
