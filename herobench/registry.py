"""Name -> factory registries with "did you mean" suggestions (after lm-evaluation-harness).

Factories that need heavy or licence-restricted packages import them inside the factory, so listing
what exists never imports them."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar, overload

from herobench.errors import UnknownNameError

F = TypeVar("F", bound=Callable)


class Registry(Generic[F]):
    """A named set of factories of one ``kind`` ("method", "oracle", "model", ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, F] = {}

    @overload
    def register(self, name: str) -> Callable[[F], F]: ...
    @overload
    def register(self, name: str, factory: F) -> F: ...

    def register(self, name: str, factory: F | None = None) -> F | Callable[[F], F]:
        """Register ``factory`` under ``name``; without ``factory`` returns a decorator.

        Raises:
            ValueError: the name is empty or already registered (a programming error, not user input).
        """
        if not name or not isinstance(name, str):
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")

        def add(f: F) -> F:
            if name in self._factories:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._factories[name] = f
            return f

        return add if factory is None else add(factory)

    def get(self, name: str) -> F:
        """The factory registered as ``name``.

        Raises:
            UnknownNameError: ``unknown {kind} 'hnad'; did you mean 'hand'? (known: ...)``.
        """
        try:
            return self._factories[name]
        except (KeyError, TypeError):
            raise UnknownNameError(unknown_name_message(self.kind, name, self.names())) from None

    def names(self) -> list[str]:
        return sorted(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._factories)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={self.names()})"


def unknown_name_message(kind: str, name: object, known: list[str]) -> str:
    """``unknown {kind} '{name}'; did you mean '{closest}'? (known: a, b, c)``; shared with task lookup."""
    # a name in the wrong case ("HERO") is the commonest typo: compare case-folded first
    folded = [k for k in known if k.casefold() == str(name).casefold()]
    close = folded or difflib.get_close_matches(str(name).casefold(), list(known), n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown {kind} '{name}'{hint} (known: {', '.join(known) or 'none'})"
