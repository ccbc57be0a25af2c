"""Distillation: the loop equals workbench.models.train without a teacher, the loss equals its definition, a
distilled student moves towards its teacher, mismatched teachers are refused, and the shipped sweep loads."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.factories import tiny_gpt
from workbench.datalab.distill import (TeacherMismatchError, check_teacher, distill_loss, load_distill,
                                       run_distillation, train_student)
from workbench.datalab.errors import DataLabError
from workbench.datalab.recipes import BOS, byte_tokenizer, corpus_split, micro_model
from workbench.models import load_pretrained, train


@pytest.fixture(scope="module")
def docs():
    tr, va = corpus_split("python-docs")
    return np.array(tr[:20000]), np.array(va[:4000])


def test_without_teacher_the_loop_is_train(docs):
    tr, va = docs
    a = tiny_gpt(vocab_size=258, n_layer=1, n_head=2, n_embd=16, block_size=32, pos="rope", train=True)
    b = tiny_gpt(vocab_size=258, n_layer=1, n_head=2, n_embd=16, block_size=32, pos="rope", train=True)
    h1 = train(a, torch.as_tensor(tr), steps=12, batch_size=4, lr=3e-3, val_ids=torch.as_tensor(va), eval_every=4,
               eval_tokens=2000, seed=3, progress=False, bos=BOS)
    h2 = train_student(b, tr, steps=12, batch_size=4, lr=3e-3, val_sets={"v": va}, eval_every=4,
                       eval_tokens=2000, seed=3)
    for (k, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), k
    assert h2.steps == h1.steps == [4, 8, 12]
    assert np.allclose(h2.val_loss["v"], h1.val_loss) and np.allclose(h2.train_loss, h1.train_loss)


def test_distill_loss_is_its_definition():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 3, 7, generator=g), torch.randn(2, 3, 7, generator=g)
    y = torch.randint(0, 7, (2, 3), generator=g)
    ce = -np.mean([F.log_softmax(s[i, j], -1)[y[i, j]].item() for i in range(2) for j in range(3)])
    T, a = 2.0, 0.3
    p = np.exp(t.numpy() / T) / np.exp(t.numpy() / T).sum(-1, keepdims=True)
    q = np.exp(s.numpy() / T) / np.exp(s.numpy() / T).sum(-1, keepdims=True)
    kl = np.mean(np.sum(p * (np.log(p) - np.log(q)), -1))
    assert distill_loss(s, y).item() == pytest.approx(ce, rel=1e-6)
    assert distill_loss(s, y, t, a, T).item() == pytest.approx((1 - a) * ce + a * T * T * kl, rel=1e-5)
    assert distill_loss(s, y, s, 1.0, T).item() == pytest.approx(0.0, abs=1e-6)


def test_distilled_student_moves_towards_its_teacher(docs):
    # a random, peaked teacher: its distribution is far from the data's, so only distillation can approach it
    teacher = tiny_gpt(vocab_size=258, n_layer=1, n_head=2, n_embd=32, block_size=64, pos="rope", weight_std=0.3,
                       seed=5)
    tr, va = docs
    x = torch.as_tensor(va[:64 * 8]).view(8, 64)

    def kl_to_teacher(m):
        with torch.no_grad():
            lp, lq = F.log_softmax(teacher(x).logits, -1), F.log_softmax(m(x).logits, -1)
        return float((lp.exp() * (lp - lq)).sum(-1).mean())

    cfg = {"vocab_size": 258, "n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 64, "pos": "rope"}
    hard, soft = micro_model(cfg, 0), micro_model(cfg, 0)
    train_student(hard, tr, steps=30, batch_size=8, seed=0)
    train_student(soft, tr, steps=30, batch_size=8, seed=0, teachers=[teacher], alpha=1.0, temperature=1.0)
    assert kl_to_teacher(soft) < 0.5 * kl_to_teacher(hard)


def test_teacher_with_another_tokenizer_is_refused():
    check_teacher(load_pretrained("docs-byte-draft"), byte_tokenizer(), 258)
    with pytest.raises(TeacherMismatchError, match="tokenizer"):
        check_teacher(load_pretrained("docs-bpe-draft"), byte_tokenizer(), 258)
    with pytest.raises(TeacherMismatchError, match="vocabulary"):
        check_teacher(load_pretrained("docs-byte-draft"), byte_tokenizer(), 300)
    with pytest.raises(TeacherMismatchError):
        run_distillation(arms=[("bpe", ("docs-bpe-draft",), 0.5, 2.0)], steps=2)


@pytest.mark.parametrize("kw, match", [({"alpha": 1.5}, "alpha"), ({"temperature": 0.0}, "temperature"),
                                       ({"alpha": 0.5}, "teacher")])
def test_bad_settings(docs, kw, match):
    with pytest.raises(DataLabError, match=match):
        train_student(micro_model(), docs[0], steps=2, **kw)


def test_live_run_progress_and_stop():
    calls = []
    res = run_distillation(arms=[("hard", (), 0.0, 1.0), ("soft", ("docs-byte-draft",), 0.5, 2.0)], seeds=(0,),
                           steps=6, progress=lambda d, t: calls.append((d, t)),
                           should_stop=lambda: len(calls) >= 6)
    assert res.stopped and res.arms == ["hard"] and res.curves.shape == (1, 1, len(res.steps))
    assert [d for d, _ in calls] == list(range(1, 7)) and calls[-1][1] == 12


def test_shipped_sweep_loads():
    res = load_distill()
    assert len(res.seeds) >= 3 and res.curves.shape[:2] == (len(res.arms), len(res.seeds))
    assert np.allclose(res.mean, res.final.mean(1)) and np.allclose(res.sd, res.final.std(1, ddof=1))
    assert set(res.teacher_loss) == {"docs-byte", "docs-byte-draft"}
    assert res.settings[0][1] == 0.0 and all(s[1] > 0 for s in res.settings[1:])
