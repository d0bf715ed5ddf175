"""Where and how the forward passes run: the device, the precision (autocast), the number of input
workers, and the process split when launched with ``accelerate launch`` / ``torch.distributed.run``."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, get_args

import torch

from ..errors import ConfigError

Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or None): CUDA, then MPS, then the CPU; anything else as torch reads it."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as error:
        raise ConfigError(f"Unknown device {device!r}: use 'auto', 'cpu', 'cuda', 'cuda:1' or 'mps'.") from error


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"``: bf16 autocast on GPUs that support it, fp16 on other GPUs, fp32 on the CPU."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, not {precision!r}.")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp16" if device.type == "mps" else "fp32"


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """Autocast to the reduced precision (weights stay fp32); nothing for fp32."""
    if precision == "fp32":
        yield
        return
    with torch.autocast(device_type=device.type, dtype=_DTYPES[precision]):
        yield


def available_cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_num_workers(local_processes: int = 1) -> int:
    """One input worker per core left to this process (cores split between the processes of a machine),
    at most 16: the fastest setting found by ``benchmarks/bench_extract.py`` (RESULTS.md)."""
    return max(1, min(16, available_cores() // max(1, local_processes)))


#: Runs of fewer batches than this decode in the main process by default: starting workers costs about
#: 65-100 ms on the 2-core machine, which a run pays back from about 4 batches of 32 images (RESULTS.md).
SMALL_RUN_BATCHES = 4


def workers_for(batches: int, requested: int | None, local_processes: int = 1) -> int:
    """Input workers for a run of ``batches`` batches: ``requested`` when given (never more than the
    batches); by default one per core, none for a run too short to pay for starting them, and at most one
    per two batches."""
    if requested is not None:
        return min(requested, batches)
    if batches < SMALL_RUN_BATCHES:
        return 0
    return min(default_num_workers(local_processes), batches // 2)


@dataclass
class Processes:
    """This process's place in a run: ``index`` of ``count`` processes, ``local_count`` on this machine,
    its ``device``; ``wait()`` is a barrier (``accelerate.PartialState.wait_for_everyone``)."""

    index: int = 0
    count: int = 1
    local_count: int = 1
    device: torch.device | None = None
    state: object | None = None

    @property
    def is_main(self) -> bool:
        return self.index == 0

    def wait(self) -> None:
        if self.state is not None and self.count > 1:
            self.state.wait_for_everyone()


def _launched_distributed() -> bool:
    """True under ``accelerate launch`` / ``torch.distributed.run`` with several processes, or when an
    ``accelerate.PartialState`` was already set up by the caller."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return True
    if "accelerate" not in sys.modules:  # nobody can have set a state up without importing it
        return False
    from accelerate import PartialState

    return bool(PartialState._shared_state)


def processes(device: str | torch.device | None = "auto") -> Processes:
    """The process split of this run. Under accelerate each process takes ``state.device`` (its own GPU)
    unless a device was named; a single process resolves ``device`` itself."""
    if not _launched_distributed():
        return Processes(device=resolve_device(device))
    try:
        from accelerate import PartialState
    except ImportError as error:
        raise ConfigError("A multi-process launch needs accelerate: pip install accelerate.") from error
    auto = device is None or str(device) == "auto"
    cpu = (not auto and torch.device(device).type == "cpu") or (auto and not torch.cuda.is_available())
    state = PartialState(cpu=cpu) if not PartialState._shared_state else PartialState()
    local = int(os.environ.get("LOCAL_WORLD_SIZE", state.num_processes))
    chosen = state.device if auto else resolve_device(device)
    if chosen.type == "cpu":
        chosen = torch.device("cpu")  # accelerate names it cpu:0; one name keeps provenance stable
    return Processes(index=state.process_index, count=state.num_processes, local_count=local, device=chosen,
                     state=state)
