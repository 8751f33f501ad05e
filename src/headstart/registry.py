"""One generic registry for backbones, strategies, heads and scores.

A leaf module with no internal imports other than ``errors``. Lookups of unknown names
raise :class:`~headstart.errors.UnknownNameError` with did-you-mean suggestions.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from headstart.errors import UnknownNameError

T = TypeVar("T")


def did_you_mean(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Close matches of ``name`` among ``candidates`` (case-insensitive)."""
    pool = {c.lower(): c for c in candidates}
    return [pool[m] for m in difflib.get_close_matches(name.lower(), list(pool), n=n, cutoff=0.6)]


class Registry(Generic[T]):
    """A named collection of factories. ``kind`` names what it holds in error messages."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._help: dict[str, str] = {}

    def register(self, name: str, help: str = "") -> Callable[[T], T]:
        """Decorator: ``@REGISTRY.register("name", help="...")``."""

        def decorator(obj: T) -> T:
            self.add(name, obj, help)
            return obj

        return decorator

    def add(self, name: str, obj: T, help: str = "") -> None:
        if name in self._items:
            raise UnknownNameError(
                f"a new {self.kind} name", f"{name!r} registered twice", "pick another name"
            )
        self._items[name] = obj
        self._help[name] = help

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise self.unknown(name) from None

    def unknown(self, name: str, extra: Iterable[str] = ()) -> UnknownNameError:
        candidates = [*self._items, *extra]
        hints = did_you_mean(name, candidates)
        fix = f"did you mean {', '.join(repr(h) for h in hints)}?" if hints else ""
        fix = (fix + " " if fix else "") + f"Known {self.kind}s: {', '.join(sorted(self._items))}."
        return UnknownNameError(f"a registered {self.kind} name", repr(name), fix)

    def help(self, name: str) -> str:
        self.get(name)
        return self._help[name]

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._items if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __len__(self) -> int:
        return len(self._items)
