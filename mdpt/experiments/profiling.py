"""XLA cost and memory analysis of compiled functions, and device memory statistics."""

from __future__ import annotations

import jax


def compiled_peak_bytes(compiled) -> int | None:
    """Peak memory of one call: device statistics on a GPU, else XLA's compiled memory analysis
    (arguments + outputs + temporaries - donated/aliased bytes)."""
    stats = device_memory_stats()
    if stats and "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"])
    m = compiled.memory_analysis()
    if m is None:
        return None
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes)


def compiled_flops(compiled) -> float | None:
    cost = compiled.cost_analysis()
    if isinstance(cost, list):
        cost = cost[0] if cost else None
    return float(cost["flops"]) if cost and "flops" in cost else None


def device_memory_stats() -> dict | None:
    dev = jax.devices()[0]
    if dev.platform == "cpu":
        return None
    try:
        return dev.memory_stats()
    except Exception:
        return None
