"""E-mail notifications against a real SMTP server on localhost (aiosmtpd), incl. STARTTLS + login."""
import datetime
import email
import socket
import ssl

import pytest

from engine.cli import main
from tests.conftest import jpeg_bytes, scene_with_faces

aiosmtpd = pytest.importorskip("aiosmtpd")
from aiosmtpd.controller import Controller  # noqa: E402
from aiosmtpd.smtp import AuthResult, LoginPassword  # noqa: E402


class Inbox:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


def _subject(m):
    return m["Subject"].replace("\r\n", "")          # unfold the header


def _text(part):
    return part.get_payload(decode=True).decode().replace("\r\n", "\n")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smtp():
    inbox = Inbox()
    c = Controller(inbox, hostname="127.0.0.1", port=_free_port())
    c.start()
    yield c.port, inbox
    c.stop()


def _tree(tmp_path, portrait):
    inp = tmp_path / "in"
    inp.mkdir()
    img, _ = scene_with_faces(portrait, h=240, w=320, faces=((40, 20, 150),))
    (inp / "ok.jpg").write_bytes(jpeg_bytes(img))
    (inp / "bad.jpg").write_bytes(b"not a jpeg")
    return inp


def test_processing_error_and_finished_mails_with_log(smtp, tmp_path, portrait):
    port, inbox = smtp
    cfg = tmp_path / "c.yml"
    # finished_email alone: fix 15, it no longer needs processing_error_email.
    cfg.write_text(f"finished_email: true\nprocessing_error_email: false\nemail_attach_log_file: true\n"
                   f"email: {{smtp_host: 127.0.0.1, port: {port}, from_address: s@x, to_addresses: [ops@x]}}\n")
    assert main(["run", "-i", str(_tree(tmp_path, portrait)), "-o", str(tmp_path / "o"), "-k", str(cfg),
                 "-l", str(tmp_path / "logs"), "-q"]) == 1
    assert [_subject(m) for m in inbox.messages] == [
        f"[image-anonymisation] {socket.gethostname()} : Anonymisation finished."]
    m = inbox.messages[0]
    body = _text(m.get_payload()[0])
    assert body.startswith("_" * 50 + "\nHostname: ") and "Failed: 1" in body
    attachment = m.get_payload()[1]
    assert attachment.get_filename().endswith(".log") and "FAILED" in _text(attachment)
    cfg.write_text(cfg.read_text().replace("processing_error_email: false", "processing_error_email: true"))
    inbox.messages.clear()
    main(["run", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "o2"), "-k", str(cfg), "-q"])
    subjects = [_subject(m) for m in inbox.messages]
    assert subjects[0].endswith(": Processing error encountered.") and subjects[-1].endswith(": Anonymisation finished.")
    assert "bad.jpg" in _text(inbox.messages[0])


def test_crash_mail(smtp, tmp_path, portrait, monkeypatch):
    port, inbox = smtp
    cfg = tmp_path / "c.yml"
    cfg.write_text(f"uncaught_exception_email: true\nemail: {{smtp_host: 127.0.0.1, port: {port}, "
                   "to_addresses: [ops@x]}\n")
    import engine.worker.build as wb
    monkeypatch.setattr(wb, "build_models", lambda *a: (_ for _ in ()).throw(ZeroDivisionError("boom")))
    with pytest.raises(ZeroDivisionError):
        main(["run", "-i", str(_tree(tmp_path, portrait)), "-o", str(tmp_path / "o"), "-k", str(cfg), "-q"])
    assert _subject(inbox.messages[0]).endswith(": Execution stopped due to uncaught ZeroDivisionError.")
    assert "boom" in _text(inbox.messages[0])


def _self_signed(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    crt, k = tmp_path / "c.pem", tmp_path / "k.pem"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return crt, k


def test_starttls_and_login(tmp_path, portrait, monkeypatch):
    crt, key = _self_signed(tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(crt, key)
    seen = []

    def auth(server, session, envelope, mechanism, data):
        ok = isinstance(data, LoginPassword) and data.login == b"sladd" and data.password == b"s3cret"
        seen.append(ok)
        return AuthResult(success=ok)

    inbox = Inbox()
    c = Controller(inbox, hostname="127.0.0.1", port=_free_port(), tls_context=ctx, require_starttls=True,
                   authenticator=auth, auth_require_tls=True)
    c.start()
    try:
        monkeypatch.setenv("SLADD_SMTP_PASSWORD", "s3cret")
        cfg = tmp_path / "c.yml"
        cfg.write_text(f"finished_email: true\nemail: {{smtp_host: 127.0.0.1, port: {c.port}, to_addresses: [a@x], "
                       f"starttls: true, cafile: {crt}, username: sladd}}\n")
        main(["run", "-i", str(_tree(tmp_path, portrait)), "-o", str(tmp_path / "o"), "-k", str(cfg), "-q"])
    finally:
        c.stop()
    assert seen == [True] and len(inbox.messages) == 1
