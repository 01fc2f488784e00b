"""Host protection: a scenario whose instances cannot fit in this host is refused first.

Every backend declares what an idle instance may cost (``memory_estimate_mib``); the
memory metric holds ``memory.instances`` of them at once and a limit check one that
allocates ``limits.memory_alloc_mib``; the host keeps ``density.mem_floor_mib`` free. A
scenario that cannot fit is refused before anything starts, with the arithmetic.
"""

from __future__ import annotations

from bench.backends.base import Backend
from bench.errors import ScenarioError
from bench.metrics.limits import limit_spec
from bench.metrics.memory import idle_spec
from bench.metrics.procmem import MIB, mem_available_bytes
from bench.scenario import Case, Scenario


def check_fits(
    scenario: Scenario,
    backends: dict[str, Backend],
    cases: list[Case],
    available_bytes: int | None = None,
) -> None:
    """Refuse, with the arithmetic, a scenario whose instances cannot fit in this host.

    The memory metric holds ``memory.instances`` instances at once; a limit check holds
    one that allocates ``limits.memory_alloc_mib``. The host keeps ``density.mem_floor_mib``
    free (a density ramp stops there by itself, so it is not refused here).
    """
    available = mem_available_bytes() if available_bytes is None else available_bytes
    floor = scenario.density.mem_floor_mib * MIB
    room = available - floor
    needs: list[tuple[float, str]] = []
    for name, backend in backends.items():
        for case in cases:
            if "memory" in scenario.metrics:
                spec = idle_spec(case.spec)
                each = backend.memory_estimate_mib(spec)
                count = scenario.memory.instances
                needs.append(
                    (count * each * MIB, f"memory: {count} x {each:.0f} MiB ({name}, {case.name})")
                )
            if "limits" in scenario.metrics:
                alloc = scenario.limits.memory_alloc_mib
                payload = case.spec.payload.model_copy(update={"mode": "alloc", "alloc_mib": alloc})
                spec = limit_spec(case.spec, payload, backend.capabilities.guest_kernel)
                each = backend.memory_estimate_mib(spec)
                needs.append((each * MIB, f"limits: one {each:.0f} MiB instance ({name})"))
    for need, what in needs:
        if need > room:
            raise ScenarioError(
                f"scenario {scenario.name!r} cannot fit on this host: {what} = "
                f"{need / MIB:.0f} MiB, but MemAvailable {available / MIB:.0f} MiB - floor "
                f"{floor / MIB:.0f} MiB (density.mem_floor_mib) leaves {room / MIB:.0f} MiB"
            )
