"""Typed records read from files: a dataclass says what a file holds, and :func:`read_record` checks a
mapping read from disk (a damaged or foreign file may hold anything) against it."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, TypeVar

from torch import Tensor

from .errors import CheckpointError, first_line

__all__ = ["matches", "read_record", "with_current_names"]

Record = TypeVar("Record")


def matches(value: Any, hint: Any, *, finite: bool = False) -> bool:
    """``value`` is of type ``hint``: None, bool, int, float (``finite``: not NaN or infinite), str, Tensor, Any,
    and unions, lists, tuples and dicts of them (a dict's keys and values both checked)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, arg, finite=finite) for arg in typing.get_args(hint))
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        return number and (not finite or math.isfinite(value))
    if hint in (str, Tensor):
        return isinstance(value, hint)
    args = typing.get_args(hint)
    if origin is list:
        return isinstance(value, list) and all(matches(v, args[0], finite=finite) for v in value)
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(matches(v, args[0], finite=finite) for v in value)
        return len(value) == len(args) and all(matches(v, a, finite=finite) for v, a in zip(value, args))
    if origin is dict:
        return isinstance(value, dict) and all(
            matches(k, args[0], finite=finite) and matches(v, args[1], finite=finite) for k, v in value.items()
        )
    raise TypeError(f"records do not hold {hint}")


def with_current_names(values: dict[str, Any], old_names: dict[str, str]) -> dict[str, Any]:
    """``values`` (read from a file an older version wrote) with each key renamed since (``old_names``: old
    name -> today's) under today's name; a value under today's name wins."""
    renamed = {old_names[key]: value for key, value in values.items() if key in old_names}
    return {**renamed, **{key: value for key, value in values.items() if key not in old_names}}


def read_record(record_class: type[Record], data: Any, path: str, what: str) -> Record:
    """``data`` (a mapping read from a file) as ``record_class``, each field checked against its type; a
    field the file lacks takes its default, keys the record does not know are dropped, and keys renamed
    since (the class's ``OLD_NAMES``, old -> today's) are read under today's names. CheckpointError names
    the first field that is missing or damaged."""
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: its {what} is a {type(data).__name__}, not a mapping; the file is damaged")
    data = with_current_names(data, getattr(record_class, "OLD_NAMES", {}))
    hints = typing.get_type_hints(record_class)
    values = {}
    for f in dataclasses.fields(record_class):
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise CheckpointError(f"{path}: its {what} has no {f.name!r}; the file is damaged or was not written by botnet")
            continue
        if not matches(data[f.name], hints[f.name]):
            raise CheckpointError(
                f"{path}: its {what} field {f.name!r} is damaged ({first_line(repr(data[f.name]))[:80]}); "
                f"the file is damaged or was not written by botnet"
            )
        values[f.name] = data[f.name]
    return record_class(**values)


