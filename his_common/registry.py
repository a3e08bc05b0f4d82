"""Named choices (clustering methods, allocation rules, public-prompt sources, learners, reward
modes, ...): one registry per kind, whose keys are the allowed names everywhere they are asked for."""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object mapping that names the allowed keys when asked for an unknown one."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T | None = None):
        """`registry.register("name", obj)`, or as a decorator: `@registry.register("name")`."""
        if entry is None:
            def decorator(obj: T) -> T:
                self.register(name, obj)
                return obj
            return decorator
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; allowed: {', '.join(self.names)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def check(self, name: str, where: str, error: Callable[[str], Exception] = ValueError) -> str:
        """`name` if registered, else `error("<where> has value ...; allowed: ...")`."""
        if name not in self._entries:
            raise error(f"{where} has value {name!r}; allowed: {', '.join(self.names)}")
        return name
