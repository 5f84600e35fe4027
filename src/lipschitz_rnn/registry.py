"""Name -> object registries, so a new model, backend or task is one new file.

Example:
    >>> from lipschitz_rnn.registry import Registry
    >>> COLOURS = Registry("colour")
    >>> @COLOURS.register("red", "rouge")
    ... class Red: ...
    >>> COLOURS.get("rouge") is Red
    True
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A case-insensitive map from names (and aliases) to objects of one kind."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._canonical: dict[str, str] = {}

    def register(self, name: str, *aliases: str) -> Callable[[T], T]:
        """Decorator: register the decorated object under ``name`` and ``aliases``."""

        def decorate(obj: T) -> T:
            self.add(name, obj, *aliases)
            return obj

        return decorate

    def add(self, name: str, obj: T, *aliases: str) -> None:
        for key in (name, *aliases):
            key = key.lower()
            if key in self._canonical:
                raise ValueError(f"{self.kind} {key!r} is already registered")
            self._canonical[key] = name.lower()
        self._entries[name.lower()] = obj

    def canonical(self, name: str) -> str:
        """The registered name that ``name`` (or an alias) stands for."""
        if not isinstance(name, str):
            raise TypeError(f"{self.kind} must be given by name (a str), got {type(name).__name__}")
        try:
            return self._canonical[name.lower()]
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r}; expected one of: {', '.join(self.names())}") from None

    def get(self, name: str) -> T:
        return self._entries[self.canonical(name)]

    def names(self) -> list[str]:
        """Registered names, aliases excluded, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._canonical

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"
