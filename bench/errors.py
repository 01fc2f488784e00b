"""Errors bench raises on purpose; the CLI maps each kind to one message and an exit code."""

from __future__ import annotations


class BenchError(Exception):
    """Base of every error bench reports to a user as a message rather than a traceback."""

    exit_code = 1


class ScenarioError(BenchError):
    """A scenario file is unreadable or invalid (names the file, the field path, the reason)."""

    exit_code = 2


class BackendUnavailable(BenchError):
    """A backend cannot run on this host now; says why and how to fix it."""

    exit_code = 3

    def __init__(self, backend: str, reason: str, fix: str) -> None:
        super().__init__(f"backend {backend} unavailable: {reason}; {fix}")
        self.backend = backend
        self.reason = reason
        self.fix = fix


class ArtifactError(BenchError):
    """The probe, an image or a guest artefact could not be built."""

    exit_code = 3


class InstanceError(BenchError):
    """An instance failed during its lifecycle (start, readiness, exit, removal)."""


class InstanceTimeout(InstanceError):
    """An instance did not reach a stage before its timeout."""


class ResultsError(BenchError):
    """A results file is unreadable, or has a schema version this bench cannot read."""

    exit_code = 2


class ResultsStorageError(BenchError):
    """Results could not be written (disk full, an I/O error): the run stopped, cleaned up.

    The run's last record (status ``failed`` and this reason) was written into space
    reserved for it when the run started.
    """

    exit_code = 4
