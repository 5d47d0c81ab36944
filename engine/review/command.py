"""`sladd review -o OUTPUT (-a ARCHIVE | -i INPUT) [-k CFG] [--host H] [--port P]`.

Exit codes: 0 stopped with Ctrl-C or SIGTERM; 2 bad usage or configuration (a folder missing,
not a run's output, the port taken).
"""
from __future__ import annotations

import ipaddress
import logging
import signal
import sys

from engine.review.index import ReviewError
from engine.review.server import ReviewApp, make_server

__all__ = ["cli_main"]

LOG = logging.getLogger("sladd")


def _warn_if_exposed(host: str) -> None:
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        LOG.warning("review: listening on %s, not only this machine: whoever can reach it and has the URL's "
                    "token can see the originals and change this run's outputs", host)


def cli_main(args, cfg) -> int:
    """`args`: engine/cli.py's parsed `review` options; `cfg`: the run's configuration (loaded there)."""
    if not 0 <= args.port <= 65535:
        print(f"sladd review: --port must be 0..65535, got {args.port}", file=sys.stderr)
        return 2
    try:
        app = ReviewApp.open(cfg, args.output, archive=args.archive, input=args.input)
        server = make_server(app, args.host, args.port)
    except ReviewError as exc:
        print(f"sladd review: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"sladd review: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    _warn_if_exposed(args.host)
    print(f"sladd review: {len(app.index.keys)} image(s) of {app.output}", file=sys.stderr)
    # stdout carries only the URL, so a script can read it; the token is in it.
    print(server.url, flush=True)
    print("sladd review: open the URL above in a browser; Ctrl-C to stop", file=sys.stderr, flush=True)

    def stop(signum, _frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever(poll_interval=0.25)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()
    print("sladd review: stopped", file=sys.stderr)
    return 0
