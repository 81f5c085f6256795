"""XLA cost and memory analysis of compiled functions."""

from __future__ import annotations


def compiled_peak_bytes(compiled) -> int | None:
    """Peak memory of one call of a compiled function (XLA memory analysis, on every backend; the
    device's own peak statistic is process-wide and only rises, so it cannot compare two steps)."""
    m = compiled_memory_bytes(compiled)
    return m["peak"] if m else None


def compiled_flops(compiled) -> float | None:
    """FLOPs of one call. XLA counts a `lax.scan` body once: for a chunk this is one step (x seeds)."""
    cost = compiled.cost_analysis()
    if isinstance(cost, list):
        cost = cost[0] if cost else None
    return float(cost["flops"]) if cost and "flops" in cost else None


def compiled_memory_bytes(compiled) -> dict | None:
    """XLA's memory analysis of a compiled function on any backend (not the process-wide device
    peak): argument, output, temporary and aliased bytes, and their peak (args + out + temp - alias)."""
    m = compiled.memory_analysis()
    if m is None:
        return None
    out = {"argument": int(m.argument_size_in_bytes), "output": int(m.output_size_in_bytes),
           "temp": int(m.temp_size_in_bytes), "alias": int(m.alias_size_in_bytes)}
    out["peak"] = out["argument"] + out["output"] + out["temp"] - out["alias"]
    return out
