"""Argument types and helpers shared by the subcommands: validated numbers and name lists, and
options documented by a config's fields."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

from autellix.options import doc_of

if TYPE_CHECKING:
    Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]
else:
    Subparsers: TypeAlias = argparse._SubParsersAction

_T = TypeVar("_T")


def _named(kind: str, parse: Callable[[str], _T]) -> Callable[[str], _T]:
    parse.__name__ = kind  # argparse names the type in some messages
    return parse


def names(kind: str, valid: Sequence[str], allow_paths: bool = False) -> Callable[[str], list[str]]:
    """An argparse type: one name, or several separated by commas, each one of ``valid``."""

    def parse(text: str) -> list[str]:
        out: list[str] = []
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            if item not in valid and not (allow_paths and Path(item).is_file()):
                extra = " or the path of a JSONL trace file" if allow_paths else ""
                raise argparse.ArgumentTypeError(
                    f"unknown {kind} {item!r}; choose from {', '.join(valid)}{extra}"
                )
            out.append(item)
        if not out:
            raise argparse.ArgumentTypeError(f"no {kind} given")
        return out

    return _named(kind, parse)


def _finite(kind: str, item: str, zero: bool) -> float:
    """``item`` as a finite number > 0 (>= 0 if ``zero``), or an argparse error naming ``kind``."""
    try:
        value = float(item)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{kind} must be a number, got {item!r}") from None
    if not ((value >= 0 if zero else value > 0) and value != float("inf")):
        raise argparse.ArgumentTypeError(
            f"{kind} must be a finite number {'>=' if zero else '>'} 0, got {item!r}"
        )
    return value


def positive_floats(kind: str) -> Callable[[str], list[float]]:
    """An argparse type: finite numbers > 0, separated by commas."""

    def parse(text: str) -> list[float]:
        out = [_finite(kind, item, zero=False) for item in (part.strip() for part in text.split(",")) if item]
        if not out:
            raise argparse.ArgumentTypeError(f"no {kind} given")
        return out

    return _named(kind, parse)


def positive_float(kind: str) -> Callable[[str], float]:
    """An argparse type: one finite number > 0."""
    many = positive_floats(kind)

    def parse(text: str) -> float:
        values = many(text)
        if len(values) != 1:
            raise argparse.ArgumentTypeError(f"{kind} takes one number, got {text!r}")
        return values[0]

    return _named(kind, parse)


def non_negative_float(kind: str) -> Callable[[str], float]:
    """An argparse type: one finite number >= 0."""
    return _named(kind, lambda text: _finite(kind, text.strip(), zero=True))


def int_at_least(minimum: int, kind: str) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{kind} must be an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{kind} must be >= {minimum}, got {value}")
        return value

    return _named(kind, parse)


def preset_name(text: str) -> str:
    """An argparse type: a cost-model preset name (``autellix.sim.cost_model.PRESETS``)."""
    from autellix.sim.cost_model import PRESETS

    if text not in PRESETS:
        raise argparse.ArgumentTypeError(f"unknown preset {text!r}; choose from {', '.join(sorted(PRESETS))}")
    return text


def shell_words(text: str) -> list[str]:
    """An argparse type: a shell-quoted argument string, split into words."""
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"cannot split {text!r}: {exc}") from None


def documented(
    parser: argparse._ActionsContainer,
    config: type[Any],
    name: str,
    *flags: str,
    show_default: bool = True,
    **kwargs: Any,
) -> None:
    """Add option ``flags`` for field ``name`` of dataclass ``config``: its doc is the help text,
    the field name the destination, and its default the default unless ``kwargs`` give one
    (``None``: leave it to the config); the help shows the field's default."""
    field = next(f for f in dataclasses.fields(config) if f.name == name)
    kwargs.setdefault("default", field.default)
    text = doc_of(config, name)
    if show_default and field.default not in (None, (), False):
        shown = f"{field.default:g}" if isinstance(field.default, float) else str(field.default)
        text += f" (default: {shown})"
    parser.add_argument(*flags, dest=name, help=text.replace("%", "%%"), **kwargs)


def flat(values: Sequence[Sequence[_T]] | None) -> tuple[_T, ...] | None:
    """``nargs="+"`` of comma-separated lists -> one tuple, duplicates dropped, order kept."""
    if values is None:
        return None
    return tuple(dict.fromkeys(v for group in values for v in group))
