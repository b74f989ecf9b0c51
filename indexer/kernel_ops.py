"""Small compiled building blocks of the kernels: float16 bit patterns, cache prefetches,
and lists of flagged lanes.

Sample windows are float16, which numba cannot compute with, so they are handled as their
bit patterns: ``half_bits`` rounds like ``torch.Tensor.half``; ``to_half_bits`` is the
CPU's own conversion where it has one, else ``half_bits``.
"""

from __future__ import annotations

import platform

import numba
import numpy as np
from llvmlite import binding as llvm
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

NAN16 = np.uint16(0x7E00)
"""The float16 quiet NaN's bit pattern."""


@numba.njit(cache=True)
def half_bits(f: np.uint32) -> np.uint16:  # pragma: no cover - compiled
    """The float16 bit pattern nearest to the float32 with bit pattern ``f`` (round half
    to even, overflow to infinity, NaN to the quiet NaN)."""
    f = np.uint32(f)
    sign = np.uint32((f >> np.uint32(16)) & np.uint32(0x8000))
    e = np.int64((f >> np.uint32(23)) & np.uint32(0xFF))
    m = np.uint32(f & np.uint32(0x7FFFFF))
    if e == 0xFF:
        return np.uint16(sign | (np.uint32(0x7E00) if m else np.uint32(0x7C00)))
    e16 = e - 127 + 15
    if e16 >= 31:
        return np.uint16(sign | np.uint32(0x7C00))
    if e16 <= 0:  # a float16 subnormal, or zero
        if e16 < -10:
            return np.uint16(sign)
        m = m | np.uint32(0x800000)
        shift = np.uint32(14 - e16)
        half = m >> shift
        rem = m & ((np.uint32(1) << shift) - np.uint32(1))
        halfway = np.uint32(1) << (shift - np.uint32(1))
        if rem > halfway or (rem == halfway and (half & np.uint32(1))):
            half += np.uint32(1)
        return np.uint16(sign | half)
    half = (np.uint32(e16) << np.uint32(10)) | (m >> np.uint32(13))
    rem = m & np.uint32(0x1FFF)
    if rem > np.uint32(0x1000) or (rem == np.uint32(0x1000) and (half & np.uint32(1))):
        half += np.uint32(1)  # a carry into the exponent is right, up to infinity
    return np.uint16(sign | half)


@intrinsic
def _fptrunc_half(typingctx, f):
    """The float16 bit pattern of the float32 with bit pattern ``f``, by LLVM's fptrunc:
    one instruction where the CPU converts (F16C on x86-64, any arm64)."""

    def codegen(context, builder, signature, args):
        value = builder.bitcast(args[0], ir.FloatType())
        return builder.bitcast(builder.fptrunc(value, ir.HalfType()), ir.IntType(16))

    return types.uint16(types.uint32), codegen


@numba.njit(cache=True)
def hardware_half_bits(f: np.uint32) -> np.uint16:  # pragma: no cover - compiled
    """``half_bits`` by the CPU's own conversion (only where it has one)."""
    return _fptrunc_half(np.uint32(f))


def _converts_halves() -> bool:
    if platform.machine().lower() in ("aarch64", "arm64"):
        return True
    try:
        return bool(llvm.get_host_cpu_features().get("f16c", False))
    except RuntimeError:  # llvmlite cannot tell on this host: round in software
        return False


HARDWARE_HALVES = _converts_halves()
to_half_bits = hardware_half_bits if HARDWARE_HALVES else half_bits


@intrinsic
def _prefetch_line(typingctx, address):
    """Ask the CPU to fetch the cache line at ``address`` for writing (LLVM's prefetch: a
    hint, never a fault)."""

    def codegen(context, builder, signature, args):
        byte_ptr = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        prefetch = builder.module.declare_intrinsic(
            "llvm.prefetch", [byte_ptr], ir.FunctionType(ir.VoidType(), [byte_ptr, i32, i32, i32])
        )
        ptr = builder.inttoptr(args[0], byte_ptr)
        builder.call(prefetch, [ptr, ir.Constant(i32, 1), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.void(types.uint64), codegen


@numba.njit(cache=True, inline="always")
def prefetch(array, u, s, q):  # pragma: no cover - compiled
    """Fetch the cache line of ``array`` [u, s, q, ...] ahead of a write."""
    at = array.ctypes.data + u * array.strides[0] + s * array.strides[1] + q * array.strides[2]
    _prefetch_line(np.uint64(at))


@numba.njit(cache=True, inline="always")
def listed(flag, flag_words, found) -> int:
    """List in ``found`` the indices whose ``flag`` is 1, reading the flags 8 at a time
    through ``flag_words`` (their uint64 view): most rows flag only a few. ``found`` is as
    long as ``flag``: the branch-free listing writes one past the last flagged index."""
    m = 0
    for w in range(flag_words.shape[0]):
        if flag_words[w]:
            for i in range(w * 8, w * 8 + 8):
                found[m] = i
                m += flag[i]
    return m


@numba.njit(cache=True, inline="always")
def any_set(words) -> bool:  # pragma: no cover - compiled
    """Whether any flag is set, 8 at a time (a uint64 view of uint8 flags)."""
    acc = np.uint64(0)
    for w in range(words.shape[0]):
        acc |= words[w]
    return acc != 0
