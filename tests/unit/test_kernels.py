"""The compiled kernels' float16 rounding against torch's."""

import numpy as np
import pytest
import torch

from indexer.kernels import HARDWARE_HALVES, half_bits, hardware_half_bits

CONVERSIONS = [half_bits] + ([hardware_half_bits] if HARDWARE_HALVES else [])


@pytest.mark.parametrize("convert", CONVERSIONS, ids=lambda f: f.__name__)
def test_half_bits_round_like_torch(convert):
    gen = torch.Generator().manual_seed(0)
    # Random bit patterns cover every exponent (subnormals, overflow, NaN, infinities) ...
    raw = torch.randint(0, 2**32, (200_000,), generator=gen, dtype=torch.int64)
    values = torch.from_numpy(raw.numpy().astype(np.uint32).view(np.float32))
    # ... and values on and next to the rounding ties of both normal and subnormal halves.
    halves = torch.arange(0, 2**16, dtype=torch.int32).to(torch.int16).view(torch.float16)
    edges = halves.float()[torch.isfinite(halves)]
    mids = (edges[:-1].double() + edges[1:].double()) / 2
    values = torch.cat([values, edges, mids.float(), torch.nextafter(mids, mids + 1).float()])
    bits = values.numpy().view(np.uint32)
    got = np.array([convert(b) for b in bits], dtype=np.uint16)
    expect = values.half().numpy().view(np.uint16)
    nan = torch.isnan(values).numpy()
    assert (got[~nan] == expect[~nan]).all()
    assert np.isnan(got[nan].view(np.float16)).all()
