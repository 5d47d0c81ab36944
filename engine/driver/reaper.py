"""Reaper for an embedded Ray cluster: `python -m engine.driver.reaper PID`.

Ray ends the cluster it started with its driver, but two of its per-node agents are children
of the raylet and outlive a driver killed with SIGKILL (they are re-parented to init and keep
running). This small process watches the driver: while it lives, it notes the driver's
descendants every half second; once the driver is gone, it kills those still running (checked by
start time, so a reused pid is never hit). Linux only (/proc).
"""
from __future__ import annotations

import os
import signal
import sys
import time

__all__ = ["descendants", "ray_actors", "main"]


def _stat(pid: int):
    """(parent pid, start time) of a process, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2:].split()     # after "pid (comm) "
    return int(fields[1]), int(fields[19])


def descendants(root: int) -> dict[int, int]:
    """pid -> start time of every live descendant of `root`."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st is not None:
                children.setdefault(st[0], []).append(int(name))
                starts[int(name)] = st[1]
    out, todo = {}, [root]
    while todo:
        for c in children.get(todo.pop(), ()):
            if c != os.getpid() and c not in out:
                out[c] = starts[c]
                todo.append(c)
    return out


def ray_actors(root: int) -> list[int]:
    """Pids of the Ray actor processes (sladd's workers) below `root`."""
    out = []
    for pid in descendants(root):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if fh.read().startswith(b"ray::_Actor"):
                    out.append(pid)
        except OSError:
            pass
    return out


def main(argv=None) -> int:
    driver = int((argv or sys.argv[1:])[0])
    seen: dict[int, int] = {}
    while os.getppid() == driver:
        seen.update(descendants(driver))
        seen = {p: s for p, s in seen.items() if (st := _stat(p)) is not None and st[1] == s}
        time.sleep(0.5)
    for pid, start in seen.items():
        st = _stat(pid)
        if st is not None and st[1] == start:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
