"""Scaling laws: correct fitters, published data replayed, compute-optimal allocation, sweeps.

Fitting (Approach 3): :func:`fit_chinchilla`, :func:`fit_power_law`. Approach 2: :func:`fit_isoflop`.
Allocation: :func:`compute_optimal`, :func:`tokens_per_parameter`. Over-training (Gadre et al. 2024):
:func:`fit_overtraining`. Extrapolation: :func:`extrapolation_check`. Replays: :func:`load_chinchilla`,
:func:`load_gadre`, :func:`load_tinygpt_sweep`. Sweeps: :func:`run_sweep` with a :class:`SweepStore`.
Emergence (Schaeffer et al. 2023): :func:`score_addition`, :func:`emergence_sweep`, :func:`train_on_answers`,
:func:`load_emergence` (the shipped sweep). The lab's helpers live in :mod:`workbench.scaling.lab`.
Bad input raises a subclass of :class:`ScalingError` (a ``ValueError``).

Lesson: ``notebooks/04_scaling_laws.ipynb``.
"""
from .allocation import Allocation, compute_optimal, tokens_per_parameter
from .emergence import (EmergencePoint, EmergenceScores, answer_batch, emergence_sweep, held_out_problems, load_emergence,
                        score_addition, score_outputs, token_edit_distance, train_on_answers)
from .errors import (LengthMismatchError, NonFiniteError, NonPositiveError, ScalingError, ScalingWarning,
                     StoreVersionError, TooFewPointsError)
from .extrapolation import ExtrapolationCheck, extrapolation_check
from .fitters import (CHINCHILLA_PARAMS, POWER_LAW_PARAMS, ChinchillaFit, PowerLawFit, chinchilla_grid,
                      fit_chinchilla, fit_power_law, huber_objective, power_law_grid)
from .isoflop import HOFFMANN_BUDGETS, IsoFLOPFit, IsoFLOPProfile, fit_isoflop, group_budgets
from .overtraining import OVERTRAINING_PARAMS, OvertrainingFit, fit_overtraining, overtraining_grid
from .replays import (BESIROGLU_2024, BESIROGLU_2024_PLAIN_HUBER, HOFFMANN_2022, ChinchillaReplay, GadreReplay,
                      load_chinchilla, load_gadre, load_tinygpt_sweep)
from .sweep import RunRecord, RunSpec, SweepResult, SweepRunError, SweepStore, run_sweep, train_one

__all__ = [
    "Allocation", "compute_optimal", "tokens_per_parameter",
    "ScalingError", "TooFewPointsError", "NonPositiveError", "NonFiniteError", "LengthMismatchError",
    "StoreVersionError", "ScalingWarning",
    "ExtrapolationCheck", "extrapolation_check",
    "CHINCHILLA_PARAMS", "POWER_LAW_PARAMS", "ChinchillaFit", "PowerLawFit", "chinchilla_grid", "fit_chinchilla",
    "fit_power_law", "huber_objective", "power_law_grid",
    "HOFFMANN_BUDGETS", "IsoFLOPFit", "IsoFLOPProfile", "fit_isoflop", "group_budgets",
    "OVERTRAINING_PARAMS", "OvertrainingFit", "fit_overtraining", "overtraining_grid",
    "BESIROGLU_2024", "BESIROGLU_2024_PLAIN_HUBER", "HOFFMANN_2022", "ChinchillaReplay", "GadreReplay",
    "load_chinchilla", "load_gadre", "load_tinygpt_sweep",
    "EmergencePoint", "EmergenceScores", "emergence_sweep", "score_addition", "score_outputs",
    "token_edit_distance", "answer_batch", "held_out_problems", "load_emergence", "train_on_answers",
    "RunRecord", "RunSpec", "SweepResult", "SweepRunError", "SweepStore", "run_sweep", "train_one",
]
