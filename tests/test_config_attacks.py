"""Hostile configuration: alias bombs, non-UTF-8 files, identifiers that are paths or SQL,
format-string tricks, code in `db create-config` values, leaked passwords, quoted booleans.

Config errors are checked through the real command (`python -m engine.cli`, as `sladd`): exit
2, a short message naming the file or key, no traceback, and nothing written."""
from __future__ import annotations

import ast
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from engine.cli import main
from engine.config import ConfigError, check_template, load_config, redacted_dump
from engine.demo import jpeg_with_exif, road_scene
from engine.logs import RedactingFilter, log_file_path, redact_text

ROOT = Path(__file__).resolve().parent.parent


def sladd(*args, cwd: Path, env: dict | None = None, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    """Run the CLI in a fresh interpreter; returns (completed process, seconds)."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "engine.cli", *map(str, args)], cwd=cwd, env=full_env,
                       capture_output=True, text=True, timeout=timeout)
    return p, time.perf_counter() - t0


def run_with_config(tmp_path: Path, text: str | bytes, name: str = "c.yml"):
    cfg = tmp_path / name
    cfg.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    (tmp_path / "in").mkdir(exist_ok=True)
    p, seconds = sladd("run", "-i", tmp_path / "in", "-o", tmp_path / "out", "-l", tmp_path / "logs", "-k", cfg, "-q",
                       cwd=tmp_path)
    return p, seconds, cfg


def assert_config_error(p: subprocess.CompletedProcess, tmp_path: Path, *fragments: str, max_len: int = 1500):
    assert p.returncode == 2, p.stderr[-2000:]
    assert "Traceback" not in p.stderr and len(p.stderr) < max_len, p.stderr[:2000]
    for f in fragments:
        assert f in p.stderr, (f, p.stderr)
    assert not (tmp_path / "out").exists() and not (tmp_path / "logs").exists()   # nothing was processed


# --- YAML -------------------------------------------------------------------------------------
def billion_laughs(levels: int = 9) -> str:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    prev = "a"
    for name in "bcdefghijk"[:levels - 1]:
        lines.append(f"{name}: &{name} [" + ", ".join(["*" + prev] * 9) + "]")
        prev = name
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_rejected_fast_and_quietly(tmp_path):
    """9^9 "lol"s: before the fix, 67 s, 9.3 GB and 2 GB of stderr."""
    p, seconds, cfg = run_with_config(tmp_path, billion_laughs())
    assert_config_error(p, tmp_path, str(cfg), "YAML nodes", max_len=400)
    assert "lol" not in p.stderr
    assert seconds < 2.0, seconds                    # interpreter start-up included


def test_alias_bomb_in_process_under_a_second(tmp_path):
    f = tmp_path / "c.yml"
    f.write_text(billion_laughs(10))
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="YAML nodes") as e:
        load_config(f)
    assert time.perf_counter() - t0 < 1.0 and len(str(e.value)) < 300


@pytest.mark.parametrize("text,fragment", [
    ("a: &x [*x]\n", "recursive alias"),
    ("a: &x {b: *x}\n", "recursive alias"),
    ("blur: " + "9" * 5000 + "\n", "unreadable value"),
    ("a: " + "[" * 5000 + "]" * 5000 + "\n", "not valid YAML"),
])
def test_other_yaml_attacks_are_config_errors(tmp_path, text, fragment):
    p, _, cfg = run_with_config(tmp_path, text)
    assert_config_error(p, tmp_path, str(cfg), fragment)


def test_merge_keys_and_small_anchors_still_work(tmp_path):
    f = tmp_path / "c.yml"
    f.write_text("engine: &e {writers: 3, queue_size: 4}\n")
    assert load_config(f)[0].engine.writers == 3
    f.write_text("models:\n  - &m {card: centerface}\n  - *m\n")
    assert [m.card for m in load_config(f)[0].models] == ["centerface", "centerface"]


def test_huge_values_are_not_echoed(tmp_path):
    big = "Q" * 200_000
    p, _, cfg = run_with_config(tmp_path, f"blurr: {big}\ndata_eier: [{', '.join(['1'] * 5000)}]\n")
    assert_config_error(p, tmp_path, "`blurr`", "`data_eier`", max_len=1200)
    assert "Q" * 100 not in p.stderr


def test_config_file_too_big(tmp_path):
    p, _, cfg = run_with_config(tmp_path, "# " + "x" * (2 << 20) + "\n")
    assert_config_error(p, tmp_path, str(cfg), "larger than")


def test_non_utf8_config_names_the_file(tmp_path):
    p, _, cfg = run_with_config(tmp_path, "data_eier: Statens vegvesen Ålesund\n".encode("latin-1"), "latin1.yml")
    assert_config_error(p, tmp_path, str(cfg), "not UTF-8")


def test_config_that_is_a_folder(tmp_path):
    (tmp_path / "in").mkdir()
    p, _ = sladd("run", "-i", tmp_path / "in", "-o", tmp_path / "out", "-k", tmp_path / "in", cwd=tmp_path)
    assert_config_error(p, tmp_path, "cannot be read")


# --- SQL identifiers --------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../../etc/x", "/tmp/x", "VEGBILDER; DROP TABLE x", 'a"b', "x" * 64, "1abc",
                                  "bildær", "a b", ""])
def test_table_name_must_be_an_identifier(tmp_path, name):
    p, _, _ = run_with_config(tmp_path, yaml.safe_dump({"table_name": name, "write_exif_to_db": True}))
    assert_config_error(p, tmp_path, "`table_name`", "SQL identifier")
    assert not list(tmp_path.rglob("*.sqlite"))


def test_identifier_names_accepted(tmp_path):
    f = tmp_path / "c.yml"
    for name in ("VEGBILDER", "vegbilder_2024", "_x", "x" * 63):
        f.write_text(f"table_name: {name}\n")
        assert load_config(f)[0].table_name == name


def test_embedded_sqlite_stays_in_output(tmp_path):
    from engine.db.connect import embedded_sqlite_path

    assert embedded_sqlite_path("VEGBILDER", tmp_path) == tmp_path / ".sladd" / "VEGBILDER.sqlite"
    with pytest.raises(ValueError, match="SQL identifier"):
        embedded_sqlite_path("../../x", tmp_path)


# --- format strings ---------------------------------------------------------------------------
@pytest.mark.parametrize("key,template,fragment", [
    ("exif_mappenavn", "{aar.__class__}", "no attribute or index access"),
    ("exif_mappenavn", "{0.__globals__}", "no attribute or index access"),
    ("exif_mappenavn", "{vegkat[0]}", "no attribute or index access"),
    ("exif_mappenavn", "{}", "no attribute or index access"),
    ("exif_mappenavn", "{secret}", "may use only the fields"),
    ("exif_mappenavn", "{aar:>999999999}", "width 999999999 is more than 64"),
    ("exif_mappenavn", "{meter:.99999}", "precision 99999 is more than 64"),
    ("exif_mappenavn", "{vegkat:{hp}}", "is not a plain"),
    ("exif_mappenavn", "{vegkat:d}", "cannot be formatted"),
    ("exif_mappenavn", "Vegbilder/{aar", "not a valid template"),
    ("exif_mappenavn", "{aar!x}", "conversion"),
    ("log_file_name", "{datetime:>999999999}", "width 999999999"),
    ("log_file_name", "{datetime.__class__.__init__.__globals__}", "no attribute or index access"),
    ("log_file_name", "../{datetime}.log", "plain file name"),
    ("log_file_name", "/tmp/{datetime}.log", "plain file name"),
    ("log_file_name", "sub/{datetime}.log", "plain file name"),
    ("log_file_name", "..", "plain file name"),
    ("log_file_name", "{hostname}\\\\x.log", "plain file name"),
])
def test_format_string_attacks_are_rejected_at_load(tmp_path, key, template, fragment):
    t0 = time.perf_counter()
    p, _, _ = run_with_config(tmp_path, f'{key}: "{template}"\n')
    assert_config_error(p, tmp_path, f"`{key}`", fragment)
    assert time.perf_counter() - t0 < 60


@pytest.mark.parametrize("key,template", [
    ("exif_mappenavn", "Vegbilder/{aar:04d}/{maaned:02d}/{relative_input_dir}"),
    ("exif_mappenavn", "{{literal}}/{fylke!s}/{vegkat:>3}"),
    ("log_file_name", "sladd_{datetime}_{hostname}.log"),
])
def test_documented_templates_are_accepted(tmp_path, key, template):
    f = tmp_path / "c.yml"
    f.write_text(f'{key}: "{template}"\n')
    assert getattr(load_config(f)[0], key) == template


def test_log_file_stays_inside_the_log_folder(tmp_path):
    assert log_file_path(tmp_path, "{datetime}.log").parent == tmp_path
    for bad in ("../{datetime}.log", "/etc/{hostname}", "{datetime:>999999999}"):
        with pytest.raises(ValueError):
            log_file_path(tmp_path, bad)


def test_meta_context_checks_its_template():
    from engine.meta import MetaContext

    with pytest.raises(ValueError, match="no attribute"):
        MetaContext(exif_mappenavn="{aar.__class__.__mro__}")
    with pytest.raises(ValueError):
        check_template("{datetime}/x", "log_file_name")


# --- db create-config -------------------------------------------------------------------------
PAYLOAD = 'x"; import os; os.system("touch PWNED") #'


def test_create_config_writes_literals_not_code(tmp_path, monkeypatch):
    from cryptography.fernet import Fernet

    from engine.db.connect import read_encrypted_config

    monkeypatch.setenv("ORACLE_KEY", Fernet.generate_key().decode())
    out, dsn, password = tmp_path / "db_config.py", "h:1521/s\nimport os; os.system('touch PWNED')", PAYLOAD + "'''\\"
    p, _ = sladd("db", "create-config", "--user", PAYLOAD, "--password", password, "--dsn", dsn,
                 "--table-name", "VEGBILDER", "--out", out, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    # Importing the file (what the reference system does) runs nothing and gives the values back.
    q = subprocess.run([sys.executable, "-c", "import db_config as c; print(repr((c.user, c.dsn, c.schema, "
                        "c.table_name)))"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert q.returncode == 0, q.stderr
    assert not (tmp_path / "PWNED").exists()
    assert ast.literal_eval(q.stdout) == (PAYLOAD, dsn, None, "VEGBILDER")
    assert read_encrypted_config(out) == {"user": PAYLOAD, "dsn": dsn, "schema": None, "table_name": "VEGBILDER",
                                          "password": password}
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("arg,value", [("--table-name", 'VEGBILDER"; import os #'), ("--schema", "a b")])
def test_create_config_rejects_identifiers_that_are_not(tmp_path, arg, value):
    from cryptography.fernet import Fernet

    args = {"--user": "u", "--password": "p", "--dsn": "h/s", "--table-name": "VEGBILDER", arg: value}
    p, _ = sladd("db", "create-config", *[x for kv in args.items() for x in kv], "--out", tmp_path / "c.py",
                 cwd=tmp_path, env={"ORACLE_KEY": Fernet.generate_key().decode()})
    assert p.returncode == 2 and "SQL identifier" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "c.py").exists()


# --- passwords --------------------------------------------------------------------------------
SECRET = "S3cretPW-4711"


def test_redact_text_patterns():
    assert redact_text(f"postgresql://sladd:{SECRET}@db.example:5432/x") == "postgresql://sladd:***@db.example:5432/x"
    assert SECRET not in redact_text(f'URI: "oracle://u:{SECRET}@h/s" and host=h password={SECRET} port=1')
    assert SECRET not in redact_text(f"postgresql://u:{SECRET}@with@at@host/db")        # unescaped @
    harmless = "postgresql://sladd@host/db and password_env: X"
    assert redact_text(harmless) == harmless


def test_redacted_dump_hides_url_passwords():
    cfg, _ = load_config(overrides={"database": {"url": f"postgresql://sladd:{SECRET}@h/db"}})
    dump = redacted_dump(cfg)
    assert dump["database"]["url"] == "postgresql://sladd:***@h/db"
    assert dump["database"]["password_env"] == "SLADD_DB_PASSWORD"      # a variable name, kept
    assert SECRET not in repr(dump) and cfg.redacted_dump() == dump


def test_logging_filter_redacts_every_record():
    rec = logging.LogRecord("sladd", logging.ERROR, __file__, 1, "connect %s failed", (f"postgresql://u:{SECRET}@h/d",),
                            None)
    try:
        raise RuntimeError(f"driver said: postgresql://u:{SECRET}@h/d")
    except RuntimeError:
        rec.exc_info = sys.exc_info()
    assert RedactingFilter().filter(rec)
    text = logging.Formatter().format(rec)
    assert SECRET not in text and "postgresql://u:***@h/d" in text


@pytest.fixture
def one_image(tmp_path):
    inp = tmp_path / "in" / "tilSladding" / "2022"
    jpeg_with_exif(road_scene(96, 128, seed=1), inp / "EV00006_S1D1_m00100_f1.jpg")
    return tmp_path / "in"


def test_run_never_logs_the_database_password(tmp_path, one_image):
    """A URL the driver cannot parse: psycopg's error quotes the whole URI, password included."""
    cfg = tmp_path / "c.yml"
    cfg.write_text(f'write_exif_to_db: true\ndata_eier: "SVV"\nfylkesnummer: 50\n'
                   f'database:\n  url: "postgresql://sladd:{SECRET}@[::1/db"\n')
    p, _ = sladd("run", "-i", one_image, "-o", tmp_path / "out", "-l", tmp_path / "logs", "-k", cfg, cwd=tmp_path,
                 timeout=300)
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    logs = "".join(f.read_text(encoding="utf-8") for f in (tmp_path / "logs").iterdir())
    assert SECRET not in logs and SECRET not in p.stderr and SECRET not in p.stdout
    assert "CONFIG START" in logs and "postgresql://sladd:***@" in logs     # the dump is there, redacted
    assert "unreachable" in logs and "IPv6" in logs                         # and the driver's error


def test_db_command_error_never_prints_the_password(tmp_path, capsys):
    cfg = tmp_path / "c.yml"
    cfg.write_text(f'database:\n  url: "postgresql://sladd:{SECRET}@[::1/db"\n')
    assert main(["db", "create-table", "-k", str(cfg), "-o", str(tmp_path / "out")]) != 0
    err = capsys.readouterr().err
    assert "sladd db create-table" in err and SECRET not in err


def test_password_from_the_environment_is_redacted_in_logs(tmp_path, monkeypatch, caplog):
    from engine.db.connect import db_url

    monkeypatch.setenv("SLADD_TEST_PW", "envSecret-99")
    cfg, _ = load_config(overrides={"database": {"url": "postgresql://sladd@h/db", "password_env": "SLADD_TEST_PW"}})
    assert db_url(cfg, tmp_path) == ("postgresql://sladd@h/db", "envSecret-99")
    rec = logging.LogRecord("sladd", logging.ERROR, __file__, 1, "auth failed for envSecret-99", None, None)
    RedactingFilter().filter(rec)
    assert "envSecret-99" not in rec.getMessage()


# --- booleans ---------------------------------------------------------------------------------
@pytest.mark.parametrize("text,key,seen", [
    ('draw_mask: "false"\n', "draw_mask", "'false'"),
    ("draw_mask: 0\n", "draw_mask", "0"),
    ('output:\n  copy_unmasked: "no"\n', "output.copy_unmasked", "'no'"),
    ('delete_input: "true"\n', "delete_input", "'true'"),
    ('gray_blur: "off"\n', "gray_blur", "'off'"),
    ('input_follow_symlinks: "yes"\n', "input_follow_symlinks", "'yes'"),
    ("models:\n  - {card: centerface, tta_flip: 1}\n", "models.0.tta_flip", "1"),
])
def test_quoted_booleans_are_errors(tmp_path, text, key, seen):
    p, _, _ = run_with_config(tmp_path, text)
    assert_config_error(p, tmp_path, f"`{key}`", f"got {seen}", "without quotes")


def test_yaml_booleans_stay_booleans(tmp_path):
    f = tmp_path / "c.yml"
    f.write_text("draw_mask: no\ndelete_input: off\noutput:\n  copy_unmasked: false\ninput_follow_symlinks: yes\n")
    cfg, _ = load_config(f)
    assert cfg.draw_mask is False and cfg.delete_input is False and cfg.output.copy_unmasked is False
    assert cfg.input_follow_symlinks is True
    assert load_config()[0].input_follow_symlinks is False
