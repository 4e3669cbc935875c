"""Field metadata of the option dataclasses: each setting's help text, allowed range and command-line flag."""

from __future__ import annotations

import dataclasses
import math
import sys
import typing
from dataclasses import dataclass, field
from typing import Any, Callable

MAX_COUNT = 2**31 - 1  # upper bound of counts: the largest C int, what torch and numpy take as a size
MAX_SEED = 2**32 - 1  # numpy's seed range (torch and python take it too)
MAX_IMGSZ = 16384
MAX_PROCS = 1024  # dataloader workers / DDP processes


@dataclass(frozen=True)
class Range:
    """Allowed values of a number: ``lo``/``hi`` bounds (None = open ended), strict or not, whole or not."""

    lo: float | None = None
    hi: float | None = None
    lo_strict: bool = False
    hi_strict: bool = False
    whole: bool = False
    hint: str = ""

    def describe(self, value: Any = None) -> str:
        """The range in words; the technical bound MAX_COUNT only for a ``value`` that is not below the range."""
        parts = []
        low = isinstance(value, (int, float)) and self.lo is not None and value < self.lo
        if self.lo is not None:
            parts.append(f"{'>' if self.lo_strict else '>='} {_num(self.lo)}")
        if self.hi is not None and (self.hi != MAX_COUNT or not low):
            parts.append(f"{'<' if self.hi_strict else '<='} {_num(self.hi)}")
        what = "a whole number" if self.whole else "a number"
        return f"{what} {' and '.join(parts)}" if parts else what

    def ok(self, v: Any) -> bool:
        """True for a finite number in range. Python ints of any size are compared exactly (never through float,
        which overflows above 1e308); a number a float cannot hold is out of range of a float setting."""
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        if isinstance(v, float) and not math.isfinite(v):
            return False
        if self.whole and isinstance(v, float) and not v.is_integer():
            return False
        if not self.whole and isinstance(v, int) and abs(v) > sys.float_info.max:
            return False
        if self.lo is not None and (v <= self.lo if self.lo_strict else v < self.lo):
            return False
        return not (self.hi is not None and (v >= self.hi if self.hi_strict else v > self.hi))


def _num(x: float) -> str:
    """A bound for messages: whole values as plain integers (4294967295, not 4.29497e+09)."""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def count(lo: int, hint: str = "", hi: int = MAX_COUNT) -> Range:
    """Whole numbers from ``lo`` (counts, sizes, steps)."""
    return Range(lo=lo, hi=hi, whole=True, hint=hint)


PROB = Range(0.0, 1.0, hint="a probability")
FRACTION = Range(0.0, 1.0)
GAIN = Range(lo=0.0)
DECAY = Range(0.0, 1.0, lo_strict=True, hi_strict=True)
# ranges of the options that train and the other commands share (one message for --batch 0 in every command)
IMGSZ = count(1, "pixels, e.g. --imgsz 640", hi=MAX_IMGSZ)
BATCH = count(1, "images per batch, e.g. --batch 16")
WORKERS = count(0, "0 loads data in the main process", hi=MAX_PROCS)
SEED = count(0, hi=MAX_SEED)


@dataclass(frozen=True)
class Meta:
    """What a setting's field carries: help text, range (numbers), flag (settings with a command-line option) and
    ``parse`` (text typed after the flag -> value, for settings of more than one type)."""

    help: str
    range: Range | None = None
    flag: str | None = None
    parse: Callable[[str], Any] | None = None


def setting(default: Any, help: str, range: Range | None = None, flag: str | None = None,
            parse: Callable[[str], Any] | None = None) -> Any:
    """A dataclass field with its metadata (the single source of its help, range and flag)."""
    return field(default=default, metadata={"meta": Meta(help, range, flag, parse)})


def section(cls: type, help: str) -> Any:
    """A nested config section (its fields are ``<name>.<key>`` in messages and ``<name>: {...}`` in YAML)."""
    return field(default_factory=cls, metadata={"meta": Meta(help)})


def meta(f: dataclasses.Field) -> Meta:
    """The metadata of a field (every field of an option dataclass has some; tests check it)."""
    return f.metadata["meta"]


@dataclass(frozen=True)
class Leaf:
    """One setting of a (nested) option dataclass: dotted key, field, annotated type and default."""

    key: str
    field: dataclasses.Field
    type: Any
    default: Any

    @property
    def meta(self) -> Meta:
        return meta(self.field)


def leaves(cls: type, prefix: str = "") -> list[Leaf]:
    """Every leaf setting of ``cls`` (nested sections walked in field order) with the class's defaults."""
    hints = typing.get_type_hints(cls)
    default = cls()
    out: list[Leaf] = []
    for f in dataclasses.fields(cls):
        v = getattr(default, f.name)
        if dataclasses.is_dataclass(v):
            out += leaves(type(v), f"{prefix}{f.name}.")
        else:
            out.append(Leaf(f"{prefix}{f.name}", f, hints[f.name], v))
    return out


def show(value: Any) -> str:
    """A default as a user types it: true/false, lists in brackets, text bare."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return "[" + ", ".join(map(show, value)) + "]"
    return "null" if value is None else str(value)
