"""Which device a job runs on: ``"auto"`` (CUDA when present, else the CPU), ``"cpu"``, ``"cuda"`` or
``"cuda:N"``, checked against the machine so a wrong choice is one sentence, not a CUDA traceback."""

from __future__ import annotations

import re

import torch

from mechrefusal.core.errors import DeviceError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N")
_SPEC = re.compile(r"^(auto|cpu|cuda)(?::(\d+))?$")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """The torch device for a device setting (``None`` means ``"auto"``)."""
    if isinstance(device, torch.device):
        device = str(device)
    spec = "auto" if device is None else str(device).strip()
    match = _SPEC.match(spec)
    if not match or (match.group(2) is not None and match.group(1) != "cuda"):
        raise DeviceError(f"Unknown device {spec!r}; pass one of {', '.join(DEVICE_CHOICES)}.")
    kind, index = match.group(1), match.group(2)
    if kind == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeviceError(
            f"Device {spec!r} was asked for, but this machine has no CUDA device (torch "
            f"{torch.__version__}); pass device='cpu' or 'auto'."
        )
    count = torch.cuda.device_count()
    if index is not None and int(index) >= count:
        raise DeviceError(
            f"Device {spec!r} was asked for, but this machine has {count} CUDA device(s) "
            f"(cuda:0..cuda:{count - 1}); pass one of those or 'auto'."
        )
    return torch.device(spec)


def free_memory_bytes(device: torch.device) -> int | None:
    """Memory a model could still take on ``device`` (CUDA: free memory; CPU: MemAvailable), or None."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_fits(n_bytes: int, device: torch.device, *, what: str) -> None:
    """Raise a `DeviceError` when ``n_bytes`` of weights cannot fit in ``device``'s free memory."""
    free = free_memory_bytes(device)
    if free is not None and n_bytes > free:
        raise DeviceError(
            f"{what} needs about {n_bytes / 2**30:.1f} GiB on {device}, which has "
            f"{free / 2**30:.1f} GiB free; pass device_map='auto' to spread it over several "
            "devices, a smaller dtype, or another device."
        )
