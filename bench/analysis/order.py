"""Display order and colours of backends, driven by the data, never by backend names.

Every sample carries ``labels.mechanism`` (native, container, sandbox or vm): what kind
of isolation its backend is. Tables, plots and comparisons list backends by that class
(the native floor first, VMs last), then by name, and the first backend in that order
is the natural baseline of a VM-vs-container-vs-native comparison. Colours come from
one palette in the same order, so a backend that did not exist when this module was
written (gvisor, podman, a microVM) appears in the right place with its own colour.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import pandas as pd

from bench.analysis.columns import equals, text, unique_text

# Isolation classes from the least to the most: the order readers expect.
MECHANISM_ORDER = ("native", "container", "sandbox", "vm")
MECHANISM_COLUMN = "label.mechanism"
# Colour-blind-safe-ish categorical palette (Tableau 10), assigned in display order.
PALETTE = (
    "#2ca02c",
    "#1f77b4",
    "#d62728",
    "#9467bd",
    "#ff7f0e",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#7f7f7f",
)


def mechanism_rank(mechanism: str | None) -> int:
    """Position of a mechanism class in ``MECHANISM_ORDER`` (unknown classes last)."""
    if mechanism in MECHANISM_ORDER:
        return MECHANISM_ORDER.index(mechanism)
    return len(MECHANISM_ORDER)


def backend_mechanisms(frame: pd.DataFrame) -> dict[str, str]:
    """Backend name -> mechanism class, as the samples record it ("" when none does)."""
    if frame.empty or "backend" not in frame.columns:
        return {}
    found: dict[str, str] = {b: "" for b in unique_text(frame["backend"])}
    if MECHANISM_COLUMN in frame.columns and isinstance(
        frame[MECHANISM_COLUMN].dtype, pd.CategoricalDtype
    ):
        column = frame[MECHANISM_COLUMN]
        codes = column.cat.codes.to_numpy()
        for backend in found:
            known = codes[equals(frame["backend"], backend)]
            known = known[known >= 0]
            if known.size:
                found[backend] = str(column.cat.categories[int(known[0])])
    elif MECHANISM_COLUMN in frame.columns:
        mechanisms = text(frame[MECHANISM_COLUMN])
        for backend in found:
            named = mechanisms[equals(frame["backend"], backend)]
            named = named[named != None]  # noqa: E711 - elementwise on an object array
            if named.size:
                found[backend] = str(named[0])
    return found


@dataclass(frozen=True)
class BackendOrder:
    """How backends are ordered and coloured in one report or comparison."""

    mechanisms: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> BackendOrder:
        """The order of the backends that appear in a samples frame."""
        return cls(backend_mechanisms(frame))

    def rank(self, backend: str) -> tuple[int, str]:
        """Sort key of a backend: its mechanism class, then its name."""
        return (mechanism_rank(self.mechanisms.get(backend)), backend)

    def label_rank(self, label: str) -> tuple[int, str]:
        """Sort key of a legend label whose first word is the backend (``docker · a1b2``)."""
        return (self.rank(label.split(" ")[0])[0], label)

    def sorted(self, backends: Iterable[str]) -> list[str]:
        """Backends in display order (duplicates dropped)."""
        return sorted(dict.fromkeys(backends), key=self.rank)

    @property
    def backends(self) -> list[str]:
        """Every known backend in display order."""
        return self.sorted(self.mechanisms)

    def colours(self) -> dict[str, str]:
        """Backend -> colour, from ``PALETTE`` in display order."""
        return {b: PALETTE[i % len(PALETTE)] for i, b in enumerate(self.backends)}

    def mechanism(self, backend: str) -> str:
        """The backend's mechanism class, or "" when the samples do not say."""
        return self.mechanisms.get(backend, "")
