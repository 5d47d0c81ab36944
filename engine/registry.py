"""One registry per backend role (decoders, encoders, runtimes, model families).

A registry maps a name to a factory: a class, or a function that imports an optional heavy
dependency when the backend is first created (DALI, nvImageCodec, TensorRT are never
imported just to list the names). Every factory of a role takes the same keyword arguments,
so callers never branch on the name.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

__all__ = ["Registry"]


class Registry:
    """`role` names the kind of backend in error messages ("decoder", "runtime", ...)."""

    def __init__(self, role: str):
        self.role = role
        self._factories: dict[str, Callable[..., Any]] = {}

    def add(self, name: str, factory: Callable[..., Any]) -> Callable[..., Any]:
        """Register `factory` under `name`; a name is registered once."""
        if name in self._factories:
            raise ValueError(f"{self.role} {name!r} is already registered")
        self._factories[name] = factory
        return factory

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator form of `add`."""
        return lambda factory: self.add(name, factory)

    def get(self, name: str) -> Callable[..., Any]:
        """The factory registered as `name`; ValueError listing the valid names otherwise."""
        try:
            return self._factories[name]
        except KeyError:
            raise ValueError(f"unknown {self.role} {name!r}; valid: {', '.join(self.names())}") from None

    def create(self, name: str, **kwargs) -> Any:
        return self.get(name)(**kwargs)

    def names(self) -> list[str]:
        return sorted(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._factories)

    def __repr__(self) -> str:
        return f"Registry({self.role!r}: {', '.join(self.names())})"
