"""The options of the `review` and `serve` subcommands, kept apart from their packages so that
building the command line does not import a web server (asyncio, http.server: ~40 ms of every
`sladd run`'s start)."""
from __future__ import annotations

from pathlib import Path

from engine.config.load import DEFAULT_SERVICE_PROFILE, PROFILES

__all__ = ["review_arguments", "add_serve_parser"]


def review_arguments(p) -> None:
    """The options of `sladd review` (engine/review) on its subparser `p`."""
    p.add_argument("-o", "--output", required=True, type=Path, help="output folder of a run")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("-a", "--archive", type=Path, default=None, help="the run's archive folder (the originals)")
    src.add_argument("-i", "--input", type=Path, default=None, help="the run's input folder (the originals)")
    p.add_argument("-k", "--config", type=Path, default=None,
                   help="the run's YAML configuration (saves render with it)")
    p.add_argument("--profile", choices=PROFILES, default=None, help="the run's profile")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0: any free port)")


def add_serve_parser(sub) -> None:
    """The `serve` subcommand (engine/service)."""
    sv = sub.add_parser("serve", help="HTTP anonymisation service (SGBlur/Panoramax and BlurScene APIs)")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0: all)")
    sv.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    sv.add_argument("-k", "--config", type=Path, default=None, help="YAML file overriding the keys it names")
    sv.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None, help="overrides engine.device")
    sv.add_argument("--profile", default=None,
                    help=f"shipped profile under -k (default: {DEFAULT_SERVICE_PROFILE}, what Panoramax expects of SGBlur)")
