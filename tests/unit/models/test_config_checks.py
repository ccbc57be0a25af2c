"""The shared config checks (``workbench.models.config.check_config``/``check_int``/``ConfigDict``): both model
configs go through them, and every message names the class and the field."""
import pytest
import torch

from workbench.models import GPTConfig
from workbench.models.recurrent import MAX_D_STATE, RecurrentConfig
from workbench.models.tinygpt import init_gpt2


@pytest.mark.parametrize("cls", [GPTConfig, RecurrentConfig])
@pytest.mark.parametrize("field, value, message", [
    ("n_layer", 0, r"\.n_layer must be a positive int, got 0"),
    ("vocab_size", True, r"\.vocab_size must be a positive int, got True"),
    ("n_head", 2.0, r"\.n_head must be a positive int, got 2\.0"),
    ("n_embd", 30, r"\.n_embd \(30\) must be divisible by n_head \(4\)"),
    ("dropout", -0.1, r"\.dropout must be in \[0, 1\), got -0\.1"),
])
def test_shared_checks_name_class_and_field(cls, field, value, message):
    with pytest.raises(ValueError, match=rf"^{cls.__name__}{message}"):
        cls(**{field: value})


def test_own_checks_keep_their_bounds():
    with pytest.raises(ValueError, match=rf"^RecurrentConfig\.d_state \(key dimension per head\) must be an int in "
                                         rf"\[1, {MAX_D_STATE}\], got {MAX_D_STATE + 1}"):
        RecurrentConfig(d_state=MAX_D_STATE + 1)
    with pytest.raises(ValueError, match=r"^RecurrentConfig\.rewind must be an int >= 0, got -1"):
        RecurrentConfig(rewind=-1)
    assert RecurrentConfig(rewind=0).rewind == 0  # the lower bound itself is allowed
    with pytest.raises(ValueError, match=r"^GPTConfig\.pos must be one of"):
        GPTConfig(pos="sinusoid")


@pytest.mark.parametrize("cls", [GPTConfig, RecurrentConfig])
def test_dict_round_trip_and_unknown_fields(cls):
    cfg = cls(n_layer=2, n_embd=32, n_head=2)
    assert cls.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match=rf"unknown {cls.__name__} fields \['nope'\]"):
        cls.from_dict({**cfg.to_dict(), "nope": 1})


def test_init_gpt2_scales_residual_projections():
    """N(0, 0.02) everywhere, N(0, 0.02 / sqrt(2 L)) for ``*proj.weight``, zero biases."""
    torch.manual_seed(0)
    m = torch.nn.ModuleDict({"fc": torch.nn.Linear(400, 400), "proj": torch.nn.Linear(400, 400)})
    init_gpt2(m, n_layer=8)
    assert abs(float(m["fc"].weight.std()) - 0.02) < 1e-3
    assert abs(float(m["proj"].weight.std()) - 0.02 / 4) < 1e-3
    assert float(m["fc"].bias.abs().max()) == 0.0
