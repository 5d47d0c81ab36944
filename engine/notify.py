"""E-mail notifications (docs/reference.md §8): on an uncaught exception, on a processing error,
and when a run finishes, optionally with the log file attached. Unlike the reference, the
"finished" mail does not depend on `processing_error_email` (fix 15), and STARTTLS and login
are supported."""
from __future__ import annotations

import datetime as _dt
import logging
import os
from pathlib import Path
from typing import Optional

from engine.fsutil import hostname

__all__ = ["Notifier", "SUBJECT_PREFIX"]

LOG = logging.getLogger("sladd")
SUBJECT_PREFIX = "[image-anonymisation]"


class Notifier:
    """Sends the reference's three kinds of mail. `cfg` is the Config (email section + flags)."""

    max_error_mails = 20                               # per run: a broken share must not flood inboxes

    def __init__(self, cfg, log_file: Optional[Path] = None):
        self.cfg = cfg
        self.spec = cfg.email
        self.log_file = log_file
        self.sent_errors = 0
        self.enabled = bool(self.spec.smtp_host and self.spec.to_addresses)
        wanted = cfg.uncaught_exception_email or cfg.processing_error_email or cfg.finished_email
        if wanted and not self.enabled:
            LOG.warning("e-mail notifications are switched on but email.smtp_host / email.to_addresses are not "
                        "set: no mail is sent")

    def _body(self, message: str) -> str:
        line = "_" * 50
        return (f"{line}\nHostname: {hostname()}\nTime: {_dt.datetime.now():%Y-%m-%d %H:%M:%S}\n"
                f"Log file: {self.log_file or '-'}\n{line}\n\n{message}\n")

    def send(self, subject: str, message: str) -> bool:
        if not self.enabled:
            return False
        try:
            import smtplib               # here, not at import: mail, TLS and MIME cost every run's start ~8 ms
            import ssl
            from email.message import EmailMessage
        except ImportError as exc:       # never hide what the mail was about
            LOG.error("could not send the e-mail %r: %s", subject, exc)
            return False
        msg = EmailMessage()
        msg["Subject"] = f"{SUBJECT_PREFIX} {hostname()} : {subject}"
        msg["From"] = self.spec.from_address
        msg["To"] = ", ".join(self.spec.to_addresses)
        msg.set_content(self._body(message))
        if self.cfg.email_attach_log_file and self.log_file and Path(self.log_file).is_file():
            msg.add_attachment(Path(self.log_file).read_text(encoding="utf-8", errors="replace"),
                               subtype="plain", filename=Path(self.log_file).name)
        try:
            with smtplib.SMTP(self.spec.smtp_host, self.spec.port, timeout=30) as smtp:
                if self.spec.starttls:
                    ctx = ssl.create_default_context(cafile=self.spec.cafile)
                    smtp.starttls(context=ctx)
                if self.spec.username:
                    smtp.login(self.spec.username, os.environ.get(self.spec.password_env, ""))
                smtp.send_message(msg)
            return True
        except (OSError, smtplib.SMTPException) as exc:
            LOG.error("could not send the e-mail %r: %s", subject, exc)
            return False

    def crashed(self, exc: BaseException, traceback_text: str) -> None:
        if self.cfg.uncaught_exception_email:
            self.send(f"Execution stopped due to uncaught {type(exc).__name__}.", traceback_text)

    def processing_error(self, message: str) -> None:
        if self.cfg.processing_error_email and self.sent_errors < self.max_error_mails:
            self.sent_errors += 1
            self.send("Processing error encountered.", message)

    def finished(self, summary: str) -> None:
        if self.cfg.finished_email:                    # fix 15: not tied to processing_error_email
            self.send("Anonymisation finished.", summary)
