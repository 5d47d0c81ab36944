"""A wheel (what `pip install .` and Dockerfile.gpu install) carries every package and the
shipped configuration, not only what an editable checkout happens to see."""
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_has_every_package_and_the_shipped_config(tmp_path):
    pytest.importorskip("setuptools", reason="building a wheel needs setuptools")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path), str(ROOT)], check=True, cwd=tmp_path, capture_output=True)
    (whl,) = tmp_path.glob("sladd-*.whl")
    names = set(zipfile.ZipFile(whl).namelist())
    for pkg in sorted(p.parent.relative_to(ROOT) for p in ROOT.glob("engine/**/__init__.py")) + [Path("kernels")]:
        assert f"{pkg.as_posix()}/__init__.py" in names, pkg
    for cfg in ("default.yml", "360.yml", "db_tables/VEGBILDER.yml", "db_tables/VEGBILDER_V1.yml"):
        assert f"engine/config_data/{cfg}" in names, cfg
    assert "engine/models/cards/centerface-fast.yml" in names
