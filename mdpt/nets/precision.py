"""Matmul precision of the networks' Dense layers: what a GPU's fast matmul modes do to the numbers,
made the same on every backend so that their effect on scores can be measured on a CPU.

- `default`: the backend's own fp32 matmul (CPU: fp32; NVIDIA GPUs since Ampere: TF32 inputs).
- `highest`: fp32 inputs on every backend.
- `tf32`, `bf16`: every matmul's inputs rounded to nearest-even to TF32 (10 mantissa bits) or
  bfloat16 (7), products accumulated in fp32, in the forward pass and in both matmuls of the
  backward pass (the incoming gradient rounded too), as a GPU's TF32 and bf16 tensor cores do.
  The rounding is explicit, so a CPU computes what the GPU computes (up to the order of the
  fp32 sums); on a GPU the rounded inputs then go to its TF32 / bf16 matmul, which represents
  them exactly. Only matmul inputs are rounded: activations, normalizations, losses and the
  optimizer stay fp32.
"""

from __future__ import annotations

from functools import cache, partial

import jax
import jax.numpy as jnp
from jax import lax

MATMUL_PRECISIONS = ("default", "highest", "tf32", "bf16")
MANTISSA_BITS = {"tf32": 10, "bf16": 7}
_FP32_MANTISSA_BITS = 23
_GPU_ALGORITHM = {"tf32": "TF32_TF32_F32", "bf16": "BF16_BF16_F32"}


def round_mantissa(x: jax.Array, bits: int) -> jax.Array:
    """fp32 `x` rounded to nearest-even to `bits` mantissa bits (bf16: 7, TF32: 10); NaN stays NaN."""
    drop = _FP32_MANTISSA_BITS - bits
    u = lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)
    half = jnp.uint32((1 << (drop - 1)) - 1) + ((u >> drop) & jnp.uint32(1))  # ties go to the even neighbour
    rounded = (u + half) & jnp.uint32(~((1 << drop) - 1) & 0xFFFFFFFF)
    return jnp.where(jnp.isnan(x), x, lax.bitcast_convert_type(rounded, jnp.float32))


def _matmul_of_rounded(a: jax.Array, b: jax.Array, fmt: str, contract: str) -> jax.Array:
    """einsum of operands already rounded to `fmt`: exact products, fp32 sums, on the GPU's fast path."""
    algorithm = getattr(lax.DotAlgorithmPreset, _GPU_ALGORITHM[fmt], None) if jax.default_backend() == "gpu" else None
    return jnp.einsum(contract, a, b, precision=algorithm or lax.Precision.HIGHEST,
                      preferred_element_type=jnp.float32)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def rounded_matmul(x: jax.Array, w: jax.Array, fmt: str) -> jax.Array:
    """x (..., k) @ w (k, n) with every matmul's inputs rounded to `fmt` (tf32 | bf16)."""
    return _rounded_matmul_fwd(x, w, fmt)[0]


def _rounded_matmul_fwd(x, w, fmt):
    bits = MANTISSA_BITS[fmt]
    xr, wr = round_mantissa(x, bits), round_mantissa(w, bits)
    return _matmul_of_rounded(xr, wr, fmt, "...k,kn->...n"), (xr, wr)


def _rounded_matmul_bwd(fmt, residuals, g):
    xr, wr = residuals
    gr = round_mantissa(g, MANTISSA_BITS[fmt])
    dx = _matmul_of_rounded(gr, wr, fmt, "...n,kn->...k")
    dw = _matmul_of_rounded(xr.reshape(-1, xr.shape[-1]), gr.reshape(-1, gr.shape[-1]), fmt, "bk,bn->kn")
    return dx, dw


rounded_matmul.defvjp(_rounded_matmul_fwd, _rounded_matmul_bwd)


def dense_kwargs(matmul_precision: str) -> dict:
    """Keyword arguments of `flax.linen.Dense` for a matmul precision."""
    if matmul_precision == "default":
        return {}
    if matmul_precision == "highest":
        return {"precision": lax.Precision.HIGHEST}
    if matmul_precision not in MANTISSA_BITS:
        raise ValueError(f"unknown matmul precision {matmul_precision!r}; use one of: {', '.join(MATMUL_PRECISIONS)}")
    return {"dot_general": _rounded_dot_general(matmul_precision)}


@cache
def _rounded_dot_general(fmt: str):
    """Dense's dot_general with rounded inputs (one function per format, so modules compare equal)."""

    def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
        ((lc, rc), (lb, rb)) = dimension_numbers
        if tuple(lc) != (lhs.ndim - 1,) or tuple(rc) != (0,) or lb or rb or rhs.ndim != 2:
            raise ValueError("rounded matmul: only Dense's x (..., k) @ w (k, n)")
        return rounded_matmul(lhs, rhs, fmt)

    return dot_general
