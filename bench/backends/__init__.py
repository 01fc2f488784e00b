"""The backend registry: backends are plug-ins that register themselves.

Every module in this package is imported once, on first use, and each ``Backend``
subclass that names itself registers (see ``bench.backends.base``). Third-party backends
register the same way from a module named by an entry point in the ``bench.backends``
group (asv's and PKB's plug-in discovery). A module that fails to import (a missing
optional dependency) is remembered with the reason, never raised at discovery: the
backends in it are then "unavailable: <why>; <how to fix>" when asked for.

Names are listed in mechanism order (native, container, sandbox, vm), then by name: the
order every table and plot shows them in.
"""

from __future__ import annotations

import importlib
import pkgutil
import threading
from importlib import metadata as importlib_metadata

from bench.backends.base import (
    MECHANISM_ORDER,
    Backend,
    Mechanism,
    registered_backends,
)
from bench.errors import BackendUnavailable, BenchError

ENTRY_POINT_GROUP = "bench.backends"

_discovered = False
_failed_imports: dict[str, str] = {}
_lock = threading.Lock()


def discover() -> dict[str, type[Backend]]:
    """Import every backend module (once) and return the registered classes by name."""
    global _discovered
    with _lock:
        if not _discovered:
            for module in pkgutil.iter_modules(__path__, prefix=f"{__name__}."):
                if module.name.rsplit(".", 1)[-1].startswith("_"):
                    continue
                _import(module.name)
            try:
                entry_points = importlib_metadata.entry_points(group=ENTRY_POINT_GROUP)
            except Exception:  # a broken distribution must not break bench
                entry_points = importlib_metadata.EntryPoints(())
            for entry_point in entry_points:
                _import(entry_point.value.split(":")[0])
            _discovered = True
    return registered_backends()


def _import(module_name: str) -> None:
    try:
        importlib.import_module(module_name)
    except ImportError as exc:
        _failed_imports[module_name] = str(exc)


def backend_names() -> list[str]:
    """Names of every backend bench knows, in mechanism order, then by name."""
    classes = discover()
    return sorted(classes, key=lambda name: _order_key(classes[name]))


def _order_key(cls: type[Backend]) -> tuple[int, str]:
    mechanism = cls.capabilities.mechanism
    index = MECHANISM_ORDER.index(mechanism) if mechanism in MECHANISM_ORDER else len(Mechanism)
    return (index, cls.name)


def backend_class(name: str) -> type[Backend]:
    """The class registered under ``name``; an unknown name lists the valid ones."""
    classes = discover()
    try:
        return classes[name]
    except KeyError:
        hint = ""
        if _failed_imports:
            hint = "; modules that failed to import: " + "; ".join(
                f"{module} ({why})" for module, why in sorted(_failed_imports.items())
            )
        raise BenchError(
            f"unknown backend {name!r}; valid backends: {', '.join(backend_names())}{hint}"
        ) from None


def get_backend(name: str) -> Backend:
    """Instantiate a backend by name (not yet checked for availability)."""
    cls = backend_class(name)
    try:
        return cls()
    except ImportError as exc:
        raise BackendUnavailable(name, f"cannot load ({exc})", "pip install -e .") from None


__all__ = ["Backend", "backend_class", "backend_names", "discover", "get_backend"]
