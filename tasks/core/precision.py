"""`base.precision`: which dtype training and batch inference compute in, decided in one place.

`auto` computes in bf16 (autocast: weights and the optimiser stay fp32) on CUDA devices with bf16
support and on CPUs whose instruction set has bf16 arithmetic (AVX512-BF16 or AMX-BF16 on x86, the
BF16 extension on Arm), where oneDNN's bf16 matrix products run much faster than fp32 ones; fp32
elsewhere, where bf16 is emulated and gains nothing. A batch of one row stays fp32 under `auto`:
at batch 1 the time goes to per-op overhead rather than matrix products, so bf16 does not pay.
`fp32` and `bf16` force the choice (bf16 runs on any CPU, only slowly without the hardware).

The names of the settings live in tasks.precisions, which the params schema asks too.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from tasks.precisions import PRECISIONS

if TYPE_CHECKING:
    import torch

log = logging.getLogger("kd")

_announced: set[tuple[str, str, str]] = set()


def cpu_has_bf16() -> bool:
    """True when PyTorch reports bf16 arithmetic in this CPU's instruction set.

    Not `torch.ops.mkldnn._is_mkldnn_bf16_supported()`: that is true on any AVX512 CPU, where
    oneDNN emulates bf16 without a speed-up.
    """
    import torch

    caps = torch.cpu.get_capabilities()
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16") or caps.get("bf16") or caps.get("sve_bf16"))


def cuda_has_bf16() -> bool:
    """True when the current CUDA device computes in bf16 natively (Ampere and later)."""
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)


def hardware_bf16(device_type: str) -> bool:
    """Whether bf16 pays on this kind of device (cpu | cuda)."""
    return cuda_has_bf16() if device_type == "cuda" else device_type == "cpu" and cpu_has_bf16()


def resolve_precision(setting: str, device: torch.device | str, rows: int | None = None) -> torch.dtype | None:
    """The autocast dtype for `setting` on `device`: torch.bfloat16, or None for plain fp32.

    Args:
        setting: base.precision: auto | fp32 | bf16.
        device: where the model runs.
        rows: rows per forward pass when known; `auto` keeps a single row in fp32.

    Returns:
        torch.bfloat16 or None (fp32); the first resolution of each kind is logged.

    Raises:
        ValueError: an unknown setting (the params schema refuses it first, naming base.precision).
    """
    import torch

    if setting not in PRECISIONS:
        raise ValueError(f"base.precision: expected one of {', '.join(PRECISIONS)}, got {setting!r}")
    kind = torch.device(device).type
    if setting == "auto":
        bf16 = hardware_bf16(kind) and rows != 1
    else:
        bf16 = setting == "bf16"
    dtype = torch.bfloat16 if bf16 else None
    _announce(setting, kind, dtype, rows)
    return dtype


def autocast(device_type: str, dtype: torch.dtype | None) -> torch.autocast:
    """The autocast context of a resolved precision: off (fp32) for None."""
    import torch

    return torch.autocast(device_type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def precision_name(dtype: torch.dtype | None) -> str:
    """'bf16' or 'fp32': how cache keys and reports name a resolved precision."""
    import torch

    return "bf16" if dtype == torch.bfloat16 else "fp32"


def _announce(setting: str, kind: str, dtype: torch.dtype | None, rows: int | None) -> None:
    """Log a resolution once per process (a DVC stage is one process), not once per batch."""
    if rows == 1:  # the batch-1 exception is the module's rule, not news for every request
        return
    key = (setting, kind, precision_name(dtype))
    if key not in _announced:
        _announced.add(key)
        why = f"hardware bf16: {'yes' if hardware_bf16(kind) else 'no'}"
        log.info("precision: base.precision=%s -> %s on %s (%s)", setting, key[2], kind, why)
