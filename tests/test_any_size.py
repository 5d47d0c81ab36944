"""Graphs of free input size: one ONNX Runtime session per model for every size (CenterFace's
full frames and crops, NanoDet's image-fitted input), kept in the models cache so that a run
start needs neither the `onnx` package nor one session per size; and what a run's start no
longer imports."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from engine.models import create_adapter, load_card, resolve_model
from engine.models.centerface import fix_centerface_graph
from engine.models.resolve import derived_file, models_dir
from engine.runtimes import create_runtime

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def runtime():
    return create_runtime("onnxruntime", device="cpu", threads=1)


def test_centerface_runs_every_size_in_one_session_with_the_fixed_graphs_results(runtime, portrait, models_dir):
    """Oracle: the graph fixed to each size (the path before), run by ONNX Runtime directly."""
    import onnxruntime as ort

    card = load_card("centerface")
    path = resolve_model(card)
    adapter = create_adapter(card, path, runtime)
    img = np.asarray(portrait)
    proto = onnx.load(str(path))
    for h, w in ((576, 512), (192, 192), (128, 96), (64, 64)):
        view = np.ascontiguousarray(img[:h, :w])
        ours = adapter.batch([view], 1.0, threshold=0.05)[0]
        fixed = ort.InferenceSession(fix_centerface_graph(proto, h, w).SerializeToString(),
                                     providers=["CPUExecutionProvider"])
        heat, scale, offset, _ = fixed.run(None, {"input.1": adapter.blob([view], h, w)})
        theirs = adapter.decode(heat, scale, offset, (h, w), 0.05)
        assert np.array_equal(ours.boxes, theirs.boxes) and np.array_equal(ours.scores, theirs.scores)
    assert adapter._sessions == {}                     # no session per size was made
    derived = list((models_dir / "derived").glob("centerface.*.any-size.onnx"))
    assert len(derived) == 1
    dims = onnx.load(str(derived[0])).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3, "height", "width"]


def test_derived_file_is_built_once_per_version_of_its_source(tmp_path, monkeypatch):
    monkeypatch.setenv("SLADD_MODELS_DIR", str(tmp_path / "models"))
    src = tmp_path / "m.onnx"
    src.write_bytes(b"version 1")
    builds = []

    def build():
        builds.append(src.read_bytes())
        return b"derived from " + src.read_bytes()

    first = derived_file(src, "free", build)
    again = derived_file(src, "free", build)
    assert first == again and first.parent == models_dir() / "derived"
    assert first.read_bytes() == b"derived from version 1" and len(builds) == 1
    src.write_bytes(b"version 2, replaced")                # a new model file: a new derived file
    os.utime(src, ns=(1, 1))
    second = derived_file(src, "free", build)
    assert second != first and second.read_bytes() == b"derived from version 2, replaced" and len(builds) == 2
    assert not first.exists()                             # the old version's copy is gone
    other = derived_file(src, "other-tag", lambda: b"x")
    src2 = tmp_path / "m.int8.onnx"                        # a name that starts alike
    src2.write_bytes(b"another model")
    derived_file(src2, "free", lambda: b"y")
    assert second.exists() and other.exists()
    assert not list((models_dir() / "derived").glob("*.partial"))


def test_derived_file_without_a_writable_cache_is_made_for_the_run(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_bytes(b"")
    monkeypatch.setenv("SLADD_MODELS_DIR", str(blocker / "models"))   # mkdir fails below a file
    src = tmp_path / "m.onnx"
    src.write_bytes(b"model")
    path = derived_file(src, "free", lambda: b"derived")
    assert path.read_bytes() == b"derived" and blocker not in path.parents
    code = ("import os, sys; from pathlib import Path; from engine.models.resolve import derived_file; "
            "print(derived_file(Path(sys.argv[1]), 'free', lambda: b'x'))")
    out = subprocess.run([sys.executable, "-c", code, str(src)], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**os.environ, "SLADD_MODELS_DIR": str(blocker / "models")})
    assert not Path(out.stdout.strip()).exists()          # a run's own copy goes when the process ends


def test_nanodet_loads_its_free_size_graph_from_the_cache(runtime, models_dir, monkeypatch):
    """A second adapter (a second run) reads the cached graph: the onnx package is not used."""
    from test_models import _nanodet_graph

    path = models_dir / "stand-in-nanodet.onnx"
    _nanodet_graph(path)
    card = load_card("nanodet")
    first = create_adapter(card, path, runtime)
    import engine.runtimes.onnxruntime as ortmod

    monkeypatch.setattr(ortmod, "onnx_module", lambda: (_ for _ in ()).throw(AssertionError("onnx used")))
    second = create_adapter(card, path, runtime)
    assert first.resizable == second.resizable
    img = np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    a, b = first(img, first.view_scale(200, 300)), second(img, second.view_scale(200, 300))
    assert np.array_equal(a.boxes, b.boxes) and np.array_equal(a.scores, b.scores)


def test_run_command_line_imports_no_web_server_and_limits_blas_threads():
    code = ("import sys, os, engine.cli as c; c.build_parser(); "
            "print(sorted(m for m in ('asyncio', 'http.server', 'engine.service', 'engine.review') if m in sys.modules)); "
            "print(os.environ.get('OPENBLAS_NUM_THREADS'))")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[]", "1"]
    env["OPENBLAS_NUM_THREADS"] = "3"                     # the user's value is kept
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split()[-1] == "3"


def test_onnx_runtime_optimised_copy_is_reused_and_a_damaged_one_replaced(tmp_path, monkeypatch, models_dir):
    """Sessions from ONNX Runtime's optimised copy answer as a session of the file itself."""
    import shutil

    import onnxruntime as ort

    from engine.models.centerface import dynamic_graph_path

    src = dynamic_graph_path(resolve_model(load_card("centerface")))
    model = tmp_path / "cf.onnx"
    shutil.copy(src, model)
    monkeypatch.setenv("SLADD_MODELS_DIR", str(tmp_path / "models"))
    rt = create_runtime("onnxruntime", device="cpu", threads=1)
    x = np.random.default_rng(1).uniform(0, 255, (1, 3, 64, 96)).astype(np.float32)
    want = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"input.1": x})

    def same(session):
        return all(np.allclose(a, b, atol=1e-5) for a, b in zip(session.run(None, {"input.1": x}), want))

    assert same(rt.session(model))
    copies = list((tmp_path / "models" / "derived" / "ort").iterdir())
    assert len(copies) == 1 and copies[0].name.startswith("cf.") and copies[0].stat().st_size > 100_000
    stamp = copies[0].stat().st_mtime_ns
    assert same(rt.session(model)) and copies[0].stat().st_mtime_ns == stamp      # read, not written again
    copies[0].write_bytes(b"damaged")
    stale = copies[0].with_name("cf." + "0" * 16 + "." + copies[0].name.split(".", 2)[2])   # an earlier version's
    stale.write_bytes(b"old")
    kept = copies[0].with_name("cf.int8." + copies[0].name.split(".", 1)[1])          # another file's
    kept.write_bytes(b"other")
    assert same(rt.session(model))                                              # optimised again
    assert not stale.exists() and kept.exists()
    kept.unlink()
    assert copies[0].stat().st_size > 100_000 and same(ort.InferenceSession(str(copies[0]), providers=["CPUExecutionProvider"]))
    assert [p.name for p in copies[0].parent.iterdir()] == [copies[0].name]    # no partial file left


def test_models_fetch_prepares_what_a_run_start_would_make(tmp_path, monkeypatch, models_dir):
    """`sladd models fetch` leaves the free-size graph and ONNX Runtime's optimised copy in the
    cache, so the first run starts as fast as the next ones."""
    import shutil

    import engine.models.quantize as quantize
    from engine.models.fetch import fetch

    card = load_card("centerface")
    monkeypatch.setenv("SLADD_MODELS_DIR", str(tmp_path / "models"))
    (tmp_path / "models").mkdir()
    shutil.copy(models_dir / card.file, tmp_path / "models" / card.file)
    monkeypatch.setattr(quantize, "build_int8", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("not here")))
    fetch("centerface", allow_pip=False)
    derived = tmp_path / "models" / "derived"
    assert [p.name.split(".")[-2] for p in derived.glob("*.onnx")] == ["any-size"]
    assert len(list((derived / "ort").glob("centerface.*.any-size.*.onnx"))) == 1


def test_onnx_runtime_session_without_a_writable_cache(tmp_path, monkeypatch, models_dir):
    """The optimised copy is only a head start: a cache that cannot take it costs nothing else."""
    from engine.models.centerface import dynamic_graph_path

    model = dynamic_graph_path(resolve_model(load_card("centerface")))
    (tmp_path / "models" / "derived").mkdir(parents=True)
    (tmp_path / "models" / "derived" / "ort").write_bytes(b"a file where the folder would go")
    monkeypatch.setenv("SLADD_MODELS_DIR", str(tmp_path / "models"))
    session = create_runtime("onnxruntime", device="cpu", threads=1).session(model)
    heat = session.run(None, {"input.1": np.zeros((1, 3, 64, 64), np.float32)})[0]
    assert heat.shape == (1, 1, 16, 16)
    left = sorted(p.name for p in (tmp_path / "models" / "derived").iterdir() if p.name != "sha256.json")
    assert left == ["ort"] and (tmp_path / "models" / "derived" / "ort").read_bytes().startswith(b"a file")


def test_run_start_turns_the_collector_off_and_build_worker_back_on(tmp_path, models_dir):
    """`sladd run` disables the garbage collector while it imports and starts; build_worker
    freezes what exists and enables it again, for the images that follow."""
    code = ("import sys, gc; sys.argv = ['sladd', 'run']; import engine.cli; print(gc.isenabled()); "
            "from pathlib import Path; from engine.config import load_config; from engine.walk import Tree; "
            "from engine.worker.build import build_worker; "
            f"cfg = load_config(None)[0]; build_worker(cfg, Tree(Path({str(tmp_path)!r}), Path({str(tmp_path / 'o')!r}), "
            "None, ['.jpg'])); print(gc.isenabled(), gc.get_freeze_count() > 0)")
    env = {**os.environ, "SLADD_OPENVINO_PREFETCH": "0", "SLADD_MODELS_DIR": str(models_dir)}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True", "True"]
