"""The real coding path: quantisation, constriction entropy coding, and the container format.

- :mod:`.entropy`: integer tensors and binary maps to bytes and back (constriction ANS).
- :mod:`.quantise`: uniform scalar quantisation, the rate-distortion step search, tensor packing.
- :mod:`.container`: the file format (magic, version, JSON header, CRC-checked sections).

Every decoder here raises :class:`weightstep.errors.BitstreamError` on bad input, never
another exception, and checks each length and bound before it allocates.
"""

from weightstep.coding.container import Container, check_geometry
from weightstep.coding.entropy import (
    GAUSSIAN,
    LAPLACE,
    bernoulli_ideal_bits,
    coded_bits,
    decode_bits,
    decode_ints,
    encode_bits,
    encode_ints,
    ideal_bits,
)
from weightstep.coding.quantise import (
    DEFAULT_CANDIDATES,
    QuantisedTensor,
    StepCandidate,
    StepSearchReport,
    pack_tensors,
    quantise,
    quantise_absolute,
    relative_steps,
    search_step,
    unpack_tensors,
)

__all__ = [
    "Container",
    "check_geometry",
    "LAPLACE",
    "GAUSSIAN",
    "encode_ints",
    "decode_ints",
    "ideal_bits",
    "coded_bits",
    "encode_bits",
    "decode_bits",
    "bernoulli_ideal_bits",
    "DEFAULT_CANDIDATES",
    "QuantisedTensor",
    "StepCandidate",
    "StepSearchReport",
    "quantise",
    "quantise_absolute",
    "relative_steps",
    "search_step",
    "pack_tensors",
    "unpack_tensors",
]
