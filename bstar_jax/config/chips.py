"""The TPU chip table (HBM, peak bf16 FLOP/s, HBM bandwidth per chip; docs/memory.md#chips) and the
bytes one device offers. config/sizing.py sizes batches from the latter; the fit tool
(`python -m bstar_jax.tpu_fit`) prints a chip's figures next to XLA's cost analysis."""
from __future__ import annotations

import dataclasses

from bstar_jax.core import distributed

GiB = 1 << 30
# Memory a CPU "device" is assumed to have when a config sizes by fraction on CPU and sets no
# device_memory_gb (host RAM is shared by every fake device, so memory_stats() means little).
CPU_BUDGET_BYTES = 8 * GiB


@dataclasses.dataclass(frozen=True)
class Chip:
    """One TPU chip (one JAX device with megacore on v4/v5p): HBM, peak bf16 FLOP/s, HBM bytes/s."""

    name: str
    hbm_bytes: int
    peak_flops: float
    hbm_bandwidth: float


# Cloud TPU system-architecture pages (per chip): v4 32 GiB, 275 TFLOP/s, 1200 GB/s; v5e 16 GB,
# 197 TFLOP/s, 819 GB/s; v5p 95 GiB, 459 TFLOP/s, 2765 GB/s; v6e 32 GB, 918 TFLOP/s, 1638 GB/s.
CHIPS = {
    "v4": Chip("v4", 32 * GiB, 275e12, 1200e9),
    "v5e": Chip("v5e", 16 * GiB, 197e12, 819e9),
    "v5p": Chip("v5p", 95 * GiB, 459e12, 2765e9),
    "v6e": Chip("v6e", 32 * GiB, 918e12, 1638e9),
}
# jax Device.device_kind -> chip name.
DEVICE_KINDS = {"TPU v4": "v4", "TPU v5 lite": "v5e", "TPU v5e": "v5e", "TPU v5": "v5p", "TPU v5p": "v5p",
                "TPU v6 lite": "v6e", "TPU v6e": "v6e"}


def chip_of(device) -> Chip | None:
    """The chip table entry of a TPU device (a real one or one of a compile-only topology)."""
    name = DEVICE_KINDS.get(getattr(device, "device_kind", ""))
    return CHIPS.get(name) if name else None


@distributed.decided_on_writer
def device_memory_bytes(device, override_gb: float = 0.0) -> int:
    """Bytes one device offers: `override_gb` if > 0, else memory_stats()["bytes_limit"], else the
    chip table, else (CPU) CPU_BUDGET_BYTES. The writer measures (`device` as it names it): hosts
    whose runtimes reserve a little more or less still size every batch alike."""
    if override_gb and override_gb > 0:
        return int(override_gb * GiB)
    if getattr(device, "platform", "cpu") != "cpu":
        try:
            stats = device.memory_stats() or {}
        except Exception:  # compile-only topology devices have no runtime behind them
            stats = {}
        if stats.get("bytes_limit"):
            return int(stats["bytes_limit"])
    chip = chip_of(device)
    return chip.hbm_bytes if chip else CPU_BUDGET_BYTES
