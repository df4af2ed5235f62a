"""Weight stepping: hard-concrete gates, the DCT parametrisation, the update of a network, its coding.

- :mod:`.gates`: :class:`HardConcreteGate` (Louizos et al. 2018), the L0 penalty and test-time gates.
- :mod:`.dct`: orthonormal DCT-II as torch matrix products; per-tensor :func:`to_coefficients`.
- :mod:`.update`: :class:`UpdateSpec`, :class:`WeightUpdate` (Δθ for 'l0', 'dct', 'dense'),
  :func:`forward_with` and :func:`apply_delta`.
- :mod:`.code`: quantising one update and coding it as one small frame, with change maps coded
  conditioned on the previous update's map; :func:`encode_update` / :func:`decode_update`.
"""

from weightstep.stepping.code import (
    UPDATE_CANDIDATES,
    QuantisedUpdate,
    UpdateStats,
    choose_step,
    decode_update,
    encode_update,
    quantise_update,
    step_from_exponent,
)
from weightstep.stepping.dct import dct1, dct2, dct_matrix, from_coefficients, idct1, idct2, to_coefficients
from weightstep.stepping.gates import BETA, GAMMA, ZETA, HardConcreteGate
from weightstep.stepping.update import UPDATE_KINDS, UpdateSpec, WeightUpdate, apply_delta, forward_with

__all__ = [
    "BETA", "GAMMA", "ZETA", "HardConcreteGate",
    "dct_matrix", "dct1", "idct1", "dct2", "idct2", "to_coefficients", "from_coefficients",
    "UPDATE_KINDS", "UpdateSpec", "WeightUpdate", "apply_delta", "forward_with",
    "UPDATE_CANDIDATES", "QuantisedUpdate", "UpdateStats", "choose_step", "decode_update", "encode_update",
    "quantise_update", "step_from_exponent",
]
