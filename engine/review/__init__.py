"""`sladd review`: a local web page to go through a run and correct it.

index.py is the run as the page sees it (keys, detections summaries, filters, files); server.py
the HTTP server and its JSON API; command.py the command line; static/ the page (HTML, JS, CSS).
A save goes through engine.correct.apply_corrections, as `sladd correct` does.
"""
from engine.review.command import cli_main
from engine.review.index import ReviewError, RunIndex
from engine.review.server import TOKEN_HEADER, ReviewApp, ReviewServer, make_server

__all__ = ["ReviewApp", "ReviewServer", "ReviewError", "RunIndex", "make_server", "cli_main",
           "TOKEN_HEADER"]
