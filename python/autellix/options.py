"""Documented settings: a dataclass field whose meaning is written once, beside its default.

``ServerConfig`` and ``SimConfig`` declare their fields with :func:`option`; the CLI takes each
flag's help text from :func:`doc_of`, so a setting is explained in one place.
"""

from __future__ import annotations

import dataclasses
from typing import Any

_DOC = "doc"


def option(default: Any, doc: str) -> Any:
    """A dataclass field with a ``default`` and a one-line explanation (``doc``)."""
    return dataclasses.field(default=default, metadata={_DOC: doc})


def doc_of(cls: type[Any], name: str) -> str:
    """The explanation of field ``name`` of dataclass ``cls`` (KeyError if it has none)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return str(f.metadata[_DOC])
    raise KeyError(f"{cls.__name__} has no field {name!r}")
