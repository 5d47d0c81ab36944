"""Results made ahead for one later use: what the start of `sladd run` computes before the run
asks for it (engine.first_pass: the first image's pass; engine.codecs.turbo: its pixels).
Standard library only."""
from __future__ import annotations

import threading
from typing import Any, Callable, Optional

__all__ = ["Held"]


class Held:
    """Values made ahead, each handed out once, to the first `take` whose test its key passes,
    and dropped after `misses` takes that found none (the guess was not what the run does).
    `one`: a new value replaces the one held. Thread-safe; `items` is [(key, value)]."""

    def __init__(self, misses: int = 4, one: bool = False):
        self.items: list = []
        self._misses, self._one, self._missed = misses, one, 0
        self._lock = threading.Lock()
        self._made = threading.Event()                  # clear while a value is being made
        self._made.set()

    def __bool__(self) -> bool:                          # cheap: no lock; a value held or being made
        return bool(self.items) or not self._made.is_set()

    def making(self, running: bool) -> None:
        """Say that a value is being made (True) or that making it has ended (False, whether or
        not it was put): `take(..., wait=)` meanwhile waits for it."""
        (self._made.clear if running else self._made.set)()

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            if self._one:
                self.items.clear()
            self.items.append((key, value))
            self._missed = 0

    def take(self, test: Callable[[Any], bool], wait: float = 0.0) -> Optional[Any]:
        """The first value whose key passes `test` (handed out once), else None. `wait`: seconds
        to wait first for a value being made (`making`)."""
        if wait > 0 and not self._made.is_set():
            self._made.wait(wait)
        with self._lock:
            for k, (key, value) in enumerate(self.items):
                if test(key):
                    del self.items[k]
                    return value
            self._missed += 1
            if self._missed >= self._misses:
                self.items.clear()
        return None

    def clear(self) -> None:
        with self._lock:
            self.items.clear()
