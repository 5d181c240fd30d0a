"""Typed settings from plain mappings: frozen dataclasses filled key by key, every key checked where it enters.

The study's profile blocks (``layerfusion.study.settings``) are declared as dataclasses deriving from
``SettingsBlock``; ``from_mapping`` builds one from a mapping read from YAML, refusing an unknown key at any depth
with an error that names its dotted path (``probe.Cz``) and the keys allowed there, and coercing each value to its
annotated type (tuples from lists, nested blocks from mappings). ``engine_default`` reads a default from an engine
class's signature, so a knob the engine also has is defaulted in one place.

A small walker rather than a validation library: the project has no such dependency, and the walker gives the
one-line, path-naming errors the CLI prints.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import types
import typing
from collections.abc import Mapping
from dataclasses import field, fields
from typing import Any


class ProfileError(ValueError):
    """A profile setting that cannot be used: ``path`` is its dotted location, ``source`` the file it came from."""

    def __init__(self, path: tuple[str, ...], message: str, source: str = "") -> None:
        self.path, self.message, self.source = tuple(path), message, source
        super().__init__(str(self))

    def __str__(self) -> str:
        where = "".join(p if p.startswith("[") or i == 0 else f".{p}" for i, p in enumerate(self.path))
        return f"{self.source}{where + ': ' if where else ''}{self.message}"

    def within(self, key: str) -> "ProfileError":
        """The same error one level further out (``key`` prepended to the path)."""
        return ProfileError((key, *self.path), self.message, self.source)

    def from_source(self, source: str) -> "ProfileError":
        """The same error prefixed with the profile it came from."""
        return ProfileError(self.path, self.message, source)


def engine_default(owner: str, param: str) -> Any:
    """The default of ``param`` in the engine's ``owner`` (``"module.Class"``), so the study never restates it."""
    module, name = owner.rsplit(".", 1)
    cls = getattr(importlib.import_module(f"layerfusion.{module}"), name)
    default = inspect.signature(cls).parameters[param].default
    if default is inspect.Parameter.empty:  # pragma: no cover - a programming error, caught by the tests
        raise TypeError(f"{owner}({param}=...) has no default")
    return default


def _default_of(owner: str, param: str) -> Any:
    return field(default_factory=lambda: engine_default(owner, param))


# -- the coercer: one value of a declared type, errors naming where ------------------------------------------------

def _fail(message: str) -> typing.NoReturn:
    raise ProfileError((), message)


def _coerce(tp: Any, value: Any) -> Any:
    """``value`` as the annotated type ``tp`` (tuples from lists, nested settings from mappings), else an error."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(inner, value)
    if origin is tuple:
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (list, tuple)):
            _fail(f"expected a list, got {value!r}")
        out = []
        for i, item in enumerate(value):
            try:
                out.append(_coerce(args[0], item))
            except ProfileError as err:
                raise err.within(f"[{i}]") from None
        return tuple(out)
    if origin in (dict, Mapping, typing.Mapping):
        if not isinstance(value, Mapping):
            _fail(f"expected a mapping of dataset -> value, got {value!r}")
        out = {}
        for key, item in value.items():
            try:
                out[str(key)] = _coerce(args[1], item)
            except ProfileError as err:
                raise err.within(str(key)) from None
        return out
    if dataclasses.is_dataclass(tp):
        return value if isinstance(value, tp) else from_mapping(tp, value)
    if tp is bool:
        if not isinstance(value, bool):
            _fail(f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(f"expected an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str) or not value:
            _fail(f"expected a non-empty string, got {value!r}")
        return value
    raise TypeError(f"settings cannot coerce type {tp!r}")  # pragma: no cover - a programming error


def from_mapping(cls: type, raw: Any) -> Any:
    """Build the settings dataclass ``cls`` from a mapping, refusing unknown keys and naming missing ones."""
    if not isinstance(raw, Mapping):
        _fail(f"expected a mapping of settings, got {raw!r}")
    allowed = [f.name for f in fields(cls) if f.init]
    unknown = [k for k in raw if k not in allowed]
    if unknown:
        raise ProfileError((str(unknown[0]),), f"unknown setting; allowed keys here are {allowed}")
    required = [f.name for f in fields(cls) if f.init and f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING]
    missing = [k for k in required if k not in raw]
    if missing:
        _fail(f"missing required settings {missing}; add them to the profile")
    return cls(**raw)


class SettingsBlock:
    """Base of every settings dataclass: after ``__init__``, each field is coerced to its annotation (lists become
    tuples, mappings become the nested block) and ``check`` tests the values; errors name the field's path."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in fields(self):  # type: ignore[arg-type]
            try:
                object.__setattr__(self, f.name, _coerce(hints[f.name], getattr(self, f.name)))
            except ProfileError as err:
                raise err.within(f.name) from None
        self.check()

    def check(self) -> None:
        """Per-block value rules (ranges, allowed names); raise ``ProfileError`` naming the key."""

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (tuples become lists), as recorded with every results file."""
        return _jsonable(dataclasses.asdict(self))  # type: ignore[call-overload]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _positive(block: Any, *names: str) -> None:
    for name in names:
        value = getattr(block, name)
        values = value if isinstance(value, tuple) else (value,)
        if any(v is not None and v < 1 for v in values):
            raise ProfileError((name,), f"must be positive, got {value!r}")


def _non_empty(block: Any, *names: str) -> None:
    for name in names:
        if not getattr(block, name):
            raise ProfileError((name,), "must list at least one value")
