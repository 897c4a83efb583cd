"""The part of the config a stage may read: its declared fields, and nothing else.

A stage function never sees the whole :class:`~common.config.PipelineConfig`. It gets a :class:`ConfigView` built
from the ``reads`` (and ``selects``) of its declaration in ``common/pipeline/stages.py``. The same list of paths
feeds the stage's fingerprint (``registry.fingerprint``), so a field the stage reads always belongs to the identity
of its artifact. Reading a field that is not declared raises :class:`UndeclaredConfigRead` instead of quietly
becoming a dependency that no fingerprint tracks. Before the registry, stage 1b put ``sampling.system_prompt`` into
every pair while its fingerprint left it out, so a changed system prompt kept the old pairs and said "up to date".

A path is either a whole section (``"sandbox"``, ``"model"``) or one field of a section
(``"sampling.system_prompt"``). Asking for a declared whole section returns a deep copy of that dataclass, so code
that takes a ``SamplingConfig`` (``make_backend``) works unchanged. The copy means that mutating it cannot change
what the fingerprint saw. Asking for a partly declared section returns a :class:`SectionView` that allows only the
declared fields.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Iterable

from common.config import PipelineConfig, to_dict


class UndeclaredConfigRead(AttributeError):
    """A stage read a config field that its declaration does not list."""


def _split(path: str) -> tuple[str, str | None]:
    section, _, field = path.partition(".")
    return section, field or None


def check_paths(paths: Iterable[str], where: str) -> None:
    """Every path names a real section (and field) of PipelineConfig: a typo in a declaration fails at import."""
    sections = {f.name: f for f in dataclasses.fields(PipelineConfig)}
    defaults = PipelineConfig()
    for path in paths:
        section, field = _split(path)
        if section not in sections:
            raise ValueError(f"{where}: {path!r} is not a config section (known: {sorted(sections)})")
        if field is None:
            continue
        value = getattr(defaults, section)
        if value is None:  # an optional section (generator_model): check against its declared type's fields
            continue
        if not dataclasses.is_dataclass(value) or field not in {f.name for f in dataclasses.fields(value)}:
            raise ValueError(f"{where}: {path!r}: {section} has no field {field!r}")


def read_value(config: PipelineConfig, path: str) -> Any:
    """The plain-data value of ``path`` in ``config`` (what fingerprints hash and manifests record)."""
    section, field = _split(path)
    value = getattr(config, section)
    if field is not None:
        value = None if value is None else getattr(value, field)
    return to_dict(value)


class SectionView:
    """One config section with only some of its fields readable."""

    def __init__(self, stage: str, section: str, value: Any, fields: set[str]):
        self._stage, self._section, self._value, self._fields = stage, section, value, fields

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self._fields:
            raise UndeclaredConfigRead(
                f"stage {self._stage!r} read config field '{self._section}.{name}', which its declaration in "
                f"common/pipeline/stages.py does not list (it may read: "
                f"{sorted(f'{self._section}.{f}' for f in self._fields)}); add it to the stage's `reads` so that "
                f"it becomes part of the artifact's fingerprint")
        return copy.deepcopy(getattr(self._value, name))

    def __repr__(self) -> str:
        return f"SectionView({self._section}: {sorted(self._fields)})"


class ConfigView:
    """The declared part of a PipelineConfig, for one stage."""

    def __init__(self, config: PipelineConfig, stage: str, paths: Iterable[str]):
        self._config, self._stage = config, stage
        self._whole: set[str] = set()
        self._fields: dict[str, set[str]] = {}
        for path in paths:
            section, field = _split(path)
            if field is None:
                self._whole.add(section)
            else:
                self._fields.setdefault(section, set()).add(field)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._whole:
            return copy.deepcopy(getattr(self._config, name))
        if name in self._fields:
            value = getattr(self._config, name)
            return None if value is None else SectionView(self._stage, name, value, self._fields[name])
        declared = sorted(self._whole) + sorted(f"{s}.{f}" for s, fs in self._fields.items() for f in fs)
        raise UndeclaredConfigRead(
            f"stage {self._stage!r} read config section {name!r}, which its declaration in "
            f"common/pipeline/stages.py does not list (it may read: {declared}); add what it needs to the stage's "
            f"`reads` so that it becomes part of the artifact's fingerprint")

    def __repr__(self) -> str:
        return f"ConfigView({self._stage})"
