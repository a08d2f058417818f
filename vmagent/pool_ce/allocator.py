"""Cores (by CPU id) and memory of one VM: never over-allocated, never leaked, never double-booked."""

from __future__ import annotations

from typing import Dict, Mapping, Sequence, Tuple

from ..errors import AllocationError


class Allocator:
    """Hands out CPU ids and memory to payloads and takes them back."""

    def __init__(self, cpus: Sequence[int], total_memory_mb: int) -> None:
        if not cpus or len(set(cpus)) != len(cpus):
            raise AllocationError(f"CPU ids must be distinct and non-empty, got {list(cpus)}")
        self._cpus = tuple(sorted(cpus))
        self._total_memory = int(total_memory_mb)
        self._held: Dict[str, Tuple[Tuple[int, ...], int]] = {}
        self._draining = False

    @property
    def total_cores(self) -> int:
        return len(self._cpus)

    @property
    def total_memory_mb(self) -> int:
        return self._total_memory

    @property
    def free_cores(self) -> int:
        return len(self._cpus) - sum(len(c) for c, _ in self._held.values())

    @property
    def free_memory_mb(self) -> int:
        return self._total_memory - sum(m for _, m in self._held.values())

    @property
    def draining(self) -> bool:
        return self._draining

    def fits(self, cores: int, memory_mb: int) -> bool:
        return (
            not self._draining
            and 0 < cores <= self.free_cores
            and 0 <= memory_mb <= self.free_memory_mb
        )

    def allocate(self, payload_id: str, cores: int, memory_mb: int) -> Tuple[int, ...]:
        """Reserve ``cores`` CPUs (contiguous ids where possible) and ``memory_mb`` for ``payload_id``."""
        if payload_id in self._held:
            raise AllocationError(
                f"{payload_id} already holds CPUs {list(self._held[payload_id][0])}"
            )
        if self._draining:
            raise AllocationError(f"draining: {payload_id} cannot start")
        if not self.fits(cores, memory_mb):
            raise AllocationError(
                f"{payload_id} needs {cores} cores and {memory_mb} MB; free: "
                f"{self.free_cores} cores, {self.free_memory_mb} MB"
            )
        cpus = self._pick(cores)
        self._held[payload_id] = (cpus, int(memory_mb))
        return cpus

    def adopt(self, payload_id: str, cpus: Sequence[int], memory_mb: int) -> None:
        """Take back a payload that was running before a restart; refuses any overlap."""
        busy = self._busy()
        wanted = tuple(sorted(cpus))
        if (
            payload_id in self._held
            or not wanted
            or set(wanted) & busy
            or not set(wanted) <= set(self._cpus)
        ):
            raise AllocationError(
                f"cannot adopt {payload_id} on CPUs {list(wanted)}: unknown or already busy"
            )
        if memory_mb > self.free_memory_mb:
            raise AllocationError(
                f"cannot adopt {payload_id}: {memory_mb} MB > {self.free_memory_mb} MB free"
            )
        self._held[payload_id] = (wanted, int(memory_mb))

    def release(self, payload_id: str) -> None:
        if self._held.pop(payload_id, None) is None:
            raise AllocationError(f"{payload_id} holds nothing")

    def drain(self) -> None:
        self._draining = True

    def held(self) -> Mapping[str, Tuple[Tuple[int, ...], int]]:
        return dict(self._held)

    def _busy(self) -> set:
        return {cpu for cpus, _ in self._held.values() for cpu in cpus}

    def _pick(self, cores: int) -> Tuple[int, ...]:
        free = [c for c in self._cpus if c not in self._busy()]
        for start in range(len(free) - cores + 1):  # prefer a contiguous run
            run = free[start : start + cores]
            if run[-1] - run[0] == cores - 1:
                return tuple(run)
        return tuple(free[:cores])
