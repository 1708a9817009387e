"""The engines a reconstruction job can run: one registry read by the run config, the CLI and the
job-script renderer.

Adding an engine: a parameter class (a frozen dataclass with ``engine``, ``resources()`` and
``command()``, see :class:`~cosmic_dagster.compute.jobscript.EngineParams`) in its own module, and
one line in :data:`ENGINES`. Its fields become run-config fields of the same name where those exist
(:func:`params_from`), and what its ``resources()`` say decides the job's ``#SBATCH`` request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from cosmic_dagster.compute.batched_engine import BatchedParams
from cosmic_dagster.compute.jobscript import (
    CdtoolsParams,
    EngineParams,
    EpieParams,
    JobScriptError,
    PtychocamParams,
)

#: Engine name -> parameter class. The first is the default engine of every profile.
ENGINES: dict[str, type[EngineParams]] = {
    cls.engine: cls
    for cls in (
        EpieParams,
        PtychocamParams,
        CdtoolsParams,
        BatchedParams,
    )
}
DEFAULT_ENGINE = next(iter(ENGINES))


def engine_names() -> tuple[str, ...]:
    """The registered engine names, default first (CLI choices, run-config values)."""
    return tuple(ENGINES)


def params_class(engine: str) -> type[EngineParams]:
    try:
        return ENGINES[engine]
    except KeyError:
        raise JobScriptError(f"unknown engine {engine!r}; known: {', '.join(ENGINES)}") from None


def params_from(engine: str, values: Mapping[str, Any]) -> EngineParams:
    """The engine's parameters from a flat mapping (a run config): every field of the engine's
    class found in ``values`` with a value other than None is taken, the others keep their default.
    """
    cls = params_class(engine)
    chosen = {f.name: values[f.name] for f in fields(cls) if values.get(f.name) is not None}  # type: ignore[arg-type]
    return cls(**chosen)
