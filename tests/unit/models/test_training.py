import pytest
import torch

from tests.factories import tiny_gpt
from workbench.models import GPTConfig, TinyGPT, evaluate, train
from workbench.models.training import lr_at


def data():
    # a learnable periodic sequence
    return torch.tensor(([1, 2, 3, 4, 5, 6, 7] * 200)[:1200])


def fresh():
    return tiny_gpt(train=True, vocab_size=10, n_layer=1, n_head=2, n_embd=16, block_size=16, dropout=0.1)


def test_same_seed_same_result_and_learning():
    d = data()
    m1, m2 = fresh(), fresh()
    h1 = train(m1, d[:1000], 60, 8, 1e-2, val_ids=d[1000:], eval_every=20, seed=3, progress=False)
    h2 = train(m2, d[:1000], 60, 8, 1e-2, val_ids=d[1000:], eval_every=20, seed=3, progress=False)
    assert h1.train_loss == h2.train_loss and h1.val_loss == h2.val_loss
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(a, b)
    assert h1.steps == [20, 40, 60]
    assert h1.val_loss[-1] < 0.5 < h1.val_loss[0] + 1.0  # the cycle is learned
    assert h1.tokens_seen == 60 * 8 * 16
    assert all(r.tokens_per_s > 0 for r in h1.records)
    assert not m1.training


def test_different_seed_differs():
    d = data()
    h1 = train(fresh(), d, 10, 8, 1e-2, seed=1, progress=False)
    h2 = train(fresh(), d, 10, 8, 1e-2, seed=2, progress=False)
    assert h1.train_loss != h2.train_loss


def test_schedule_warms_up_then_decays():
    lrs = [lr_at(s, 100, 1.0, 10) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] == pytest.approx(0.1, abs=0.01)


def test_evaluate_is_deterministic_mean_loss():
    m = fresh().eval()
    d = data()
    assert evaluate(m, d) == evaluate(m, d)
    uniform = TinyGPT(GPTConfig(vocab_size=10, n_layer=1, n_head=2, n_embd=16, block_size=16))
    for p in uniform.parameters():
        torch.nn.init.zeros_(p)
    assert evaluate(uniform, d) == pytest.approx(torch.log(torch.tensor(10.0)).item(), rel=1e-5)


def test_bad_arguments():
    m = fresh()
    with pytest.raises(ValueError, match="steps"):
        train(m, data(), 0, progress=False)
    with pytest.raises(ValueError, match="lr"):
        train(m, data(), 1, lr=0, progress=False)
    with pytest.raises(ValueError, match="need more than"):
        train(m, torch.arange(5), 1, progress=False)
    with pytest.raises(ValueError, match="1-D"):
        train(m, torch.zeros(2, 50, dtype=torch.long), 1, progress=False)
