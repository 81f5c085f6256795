"""XLA compiler options for the training programs.

On CPU, XLA (JAX 0.10) hands each matmul, together with the elementwise ops around it, to YNNPACK as one
fused subgraph. A training step here is dozens of small (256-wide) matmuls between Mish, LayerNorm and
Adam passes; for it, YNNPACK on the matmuls alone with XLA's own fusions for the rest is faster and keeps
less memory (steps/s: IQL 1.23-1.40x, IDQL 1.09-1.15x, joint DQL 1.05-1.17x, guidance-first DQL 0.99-1.06x;
7-17% less peak memory; each measured in one process against the defaults: benchmarks/RESULTS.md,
2026-12-01). The options change which kernels sum the products, not the algorithm: results move by float32
rounding only. GPU programs get no options.

`MDPT_XLA_CPU_OPTIONS=off` compiles with XLA's defaults (e.g. to rerun a result bit for bit that was
produced before these options).
"""

from __future__ import annotations

import functools
import logging
import os

import jax
import jax.numpy as jnp

from mdpt.compile_cache import OFF as OFF_WORDS

LOG = logging.getLogger("mdpt")
CPU_TRAINING_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}
OFF = OFF_WORDS - {""}  # the words that turn MDPT_COMPILE_CACHE off; unset or empty keeps the options


@functools.cache
def training_compiler_options() -> dict:
    """The options every training chunk compiles with on this backend: CPU_TRAINING_OPTIONS on a CPU
    whose XLA knows them, otherwise none (another JAX version: XLA's defaults, never an error)."""
    if os.environ.get("MDPT_XLA_CPU_OPTIONS", "").strip().lower() in OFF or jax.default_backend() != "cpu":
        return {}
    try:
        jax.jit(lambda x: x @ x, compiler_options=CPU_TRAINING_OPTIONS).lower(jnp.ones((2, 2))).compile()
    except Exception as e:  # noqa: BLE001 - XLA reports an unknown option or value as a runtime error
        LOG.debug("XLA CPU options not supported by this JAX (%s); using XLA's defaults", e)
        return {}
    return dict(CPU_TRAINING_OPTIONS)
