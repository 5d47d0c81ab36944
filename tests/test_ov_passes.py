"""CenterFace's large passes on OpenVINO (engine.runtimes.ov_passes), the rest on ONNX Runtime:
the same detections as ONNX Runtime on a real photograph, only the large candidate passes routed
there, the choice timed once per CPU, and the compiled model of the last run loaded ahead."""
import json
import threading
from pathlib import Path

import numpy as np
import pytest

from engine.models import create_adapter, load_card, resolve_model
from engine.models.centerface import dynamic_graph_path
from engine.held import Held
from engine.runtimes import create_runtime
from kernels import downscale_mean

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def ov_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SLADD_MODELS_DIR", str(tmp_path / "models"))
    return tmp_path / "models" / "derived" / "openvino"


def test_large_pass_finds_what_onnxruntime_finds(ov_cache, portrait, monkeypatch):
    """Oracle: ONNX Runtime running the same file on the same input."""
    pytest.importorskip("openvino")
    from engine import ov_prefetch
    from engine.runtimes.ov_passes import LargePasses

    monkeypatch.setattr(ov_prefetch, "_REMEMBERED", [])         # as in a process of its own

    card = load_card("centerface")
    path = resolve_model(card)
    runtime = create_runtime("onnxruntime", device="cpu", threads=1)
    adapter = create_adapter(card, path, runtime)
    img = np.asarray(portrait.resize((1248, 1024)))
    view = np.ascontiguousarray(downscale_mean(np.ascontiguousarray(np.tile(img, (2, 2, 1))), 2))
    h, w = view.shape[:2]
    large = LargePasses(dynamic_graph_path(Path(path)), threads=1, streams=1)
    blob = adapter.blob([view], h, w)
    ours = large.session().run(None, {"input.1": blob})
    theirs = adapter._any_size.run(None, {"input.1": blob})
    assert [o.shape for o in ours] == [o.shape for o in theirs]
    assert np.abs(ours[0] - theirs[0]).max() < 0.02                 # heatmap (0..1)
    a = adapter.decode(*ours[:3], (h, w), 0.2)
    b = adapter.decode(*theirs[:3], (h, w), 0.2)
    assert len(a.boxes) == len(b.boxes) >= 4                           # the four tiled portraits
    assert np.abs(np.sort(a.boxes, 0) - np.sort(b.boxes, 0)).max() < 2.0
    # The compiled model is kept in OpenVINO's cache and recorded for the next start, with the
    # input shape of the first pass (warmed up ahead there).
    rec = ov_prefetch.recorded()
    assert rec == {"model": str(dynamic_graph_path(Path(path))), "config": large.config,
                   "shape": [1, 3, h, w], "view": None}                 # no cascade card: no view
    assert any(p.suffix == ".blob" for p in ov_cache.iterdir())          # OpenVINO's compiled form


def test_only_large_candidate_passes_go_to_openvino(portrait):
    """Crops (no candidate threshold), batches and small views stay on ONNX Runtime."""
    from engine.runtimes.ov_passes import MIN_PIXELS

    asked = []

    class Fake:
        """Large passes that note the size of each input they are given, run by ONNX Runtime."""

        def __init__(self, inner):
            self.inner = inner

        def session(self):
            return self

        def run(self, names, feed):
            (blob,) = feed.values()
            asked.append(tuple(blob.shape[2:]))
            return self.inner.run(names, feed)

    runtime = create_runtime("onnxruntime", device="cpu", threads=1)
    runtime.large_passes = lambda model_path, graph, view=None: None
    card = load_card("centerface")
    adapter = create_adapter(card, resolve_model(card), runtime)
    adapter._large = Fake(adapter._any_size)
    big = np.zeros((544, 640, 3), np.uint8)
    assert 544 * 640 >= MIN_PIXELS
    adapter.batch([big], 1.0, threshold=0.05)
    assert asked == [(544, 640)]
    adapter.batch([big], 1.0)                                           # a crop: the card's threshold
    adapter.batch([big, big], 1.0, threshold=0.05)                      # a batch
    adapter.batch([np.zeros((256, 256, 3), np.uint8)], 1.0, threshold=0.05)
    assert asked == [(544, 640)]


def test_the_choice_is_timed_once_per_cpu_threads_and_file(monkeypatch, tmp_path):
    pytest.importorskip("openvino")
    import engine.runtimes.openvino as ov

    monkeypatch.setenv("SLADD_CACHE_DIR", str(tmp_path))
    calls = []

    def timed(threads, model, size_hw=(1024, 1248)):
        calls.append((threads, Path(model).name))
        return "openvino", {"onnxruntime": 60.0, "openvino": 40.0}
    monkeypatch.setattr(ov, "time_large_pass", timed)
    assert ov.large_passes_chosen(2, None) is False and not calls
    assert ov.large_passes_chosen(2, Path("centerface.int8.onnx")) is True
    assert ov.large_passes_chosen(2, Path("centerface.int8.onnx")) is True       # remembered
    assert ov.large_passes_chosen(1, Path("centerface.int8.onnx")) is True       # other threads
    assert ov.large_passes_chosen(1, Path("centerface.onnx")) is True            # other file
    assert calls == [(2, "centerface.int8.onnx"), (1, "centerface.int8.onnx"), (1, "centerface.onnx")]
    known = json.loads((tmp_path / "runtime_choice.json").read_text())
    assert len(known) == 3 and all(v["choice"] == "openvino" for v in known.values())


def test_the_choice_is_keyed_by_the_installed_versions_as_importlib_metadata_reads_them(tmp_path, monkeypatch):
    """The key's OpenVINO version comes from its .dist-info folder (no importlib.metadata at
    start); it must read as importlib.metadata reads it, or every earlier choice is timed again."""
    import importlib.util
    from importlib.metadata import version

    from engine.runtimes.openvino import _installed_version

    if importlib.util.find_spec("openvino") is not None:
        assert _installed_version("openvino", importlib.util.find_spec("openvino")) == version("openvino")
    site = tmp_path / "site"
    (site / "fakepkg").mkdir(parents=True)
    (site / "fakepkg" / "__init__.py").write_text("")
    (site / "fakepkg-1.2.3.dist-info").mkdir()
    (site / "fakepkg-1.2.3.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: fakepkg\nVersion: 1.2.3\n")
    monkeypatch.syspath_prepend(str(site))
    spec = importlib.util.find_spec("fakepkg")
    assert _installed_version("fakepkg", spec) == version("fakepkg") == "1.2.3"


def test_the_timing_really_runs_both(tmp_path):
    pytest.importorskip("openvino")
    from engine.runtimes.openvino import time_large_pass

    choice, ms = time_large_pass(1, resolve_model(load_card("centerface")), size_hw=(256, 320))
    assert set(ms) == {"onnxruntime", "openvino"} and all(v > 0 for v in ms.values())
    assert (choice == "openvino") == (ms["openvino"] < 0.9 * ms["onnxruntime"])


def test_the_last_compiled_pass_is_loaded_ahead_and_taken_only_when_it_matches(ov_cache, monkeypatch):
    pytest.importorskip("openvino")
    from engine import ov_prefetch
    from engine.runtimes.ov_passes import LargePasses

    monkeypatch.setattr(ov_prefetch, "_REMEMBERED", [])
    monkeypatch.setattr(ov_prefetch, "_KEY", ["command A"])
    path = resolve_model(load_card("centerface"))
    large = LargePasses(dynamic_graph_path(Path(path)), threads=1, streams=2)
    assert large.session() is not None
    rec = ov_prefetch.recorded()
    assert ov_prefetch.read_record()["runs"]["command A"] == rec
    monkeypatch.setattr(ov_prefetch, "_THREAD", [])
    monkeypatch.setattr(ov_prefetch, "_LOADED", [])
    ov_prefetch.start()
    assert [t.name for t in ov_prefetch._THREAD] == ["sladd-openvino-prefetch"]
    assert ov_prefetch.take(rec["model"], {**rec["config"], "NUM_STREAMS": 3}) is None
    assert not ov_prefetch._THREAD[0].is_alive() and len(ov_prefetch._LOADED) == 1
    _, _, compiled, requests = ov_prefetch._LOADED[0]
    assert len(requests) == 2                                           # a request per stream
    assert "shape" not in rec                                          # no pass ran: no warm-up
    # A new LargePasses of the same file and settings takes it instead of compiling, and its
    # detect threads take the requests made ahead; it is handed out once.
    again = LargePasses(dynamic_graph_path(Path(path)), threads=1, streams=2)
    monkeypatch.setattr(again.core, "compile_model", lambda *a, **k: pytest.fail("compiled again"))
    again.warm()
    assert again._compiled.result() is compiled
    assert {id(s._request) for s in again._free} == {id(r) for r in requests}
    assert ov_prefetch._LOADED == [] and ov_prefetch.take(rec["model"], rec["config"]) is None
    # Its first pass records the input shape; the next start runs one inference at that shape
    # (OpenVINO prepares its kernels per shape in the first inference there).
    x = np.zeros((1, 3, 96, 128), np.float32)
    first = again.session().run(None, {"input.1": x})
    assert ov_prefetch.read_record()["runs"]["command A"]["shape"] == [1, 3, 96, 128]
    monkeypatch.setattr(ov_prefetch, "_THREAD", [])
    ov_prefetch.start()
    _, requests = ov_prefetch.take(rec["model"], rec["config"])
    assert list(requests[0].get_input_tensor().shape) == [1, 3, 96, 128]
    assert np.array_equal(requests[0].get_output_tensor(0).data, first[0])
    # What is not taken is dropped once the models are built.
    monkeypatch.setattr(ov_prefetch, "_THREAD", [])
    ov_prefetch.start()
    ov_prefetch.wait()
    assert len(ov_prefetch._LOADED) == 1
    ov_prefetch.release()
    assert ov_prefetch._LOADED == []
    # Switched off, or nothing recorded: no thread.
    monkeypatch.setattr(ov_prefetch, "_THREAD", [])
    monkeypatch.setenv("SLADD_OPENVINO_PREFETCH", "0")
    ov_prefetch.start()
    assert ov_prefetch._THREAD == []


def test_detect_threads_share_one_compiled_model_with_a_request_each(ov_cache):
    pytest.importorskip("openvino")
    from engine.runtimes.ov_passes import LargePasses

    path = resolve_model(load_card("centerface"))
    large = LargePasses(dynamic_graph_path(Path(path)), threads=1, streams=2)
    x = np.random.default_rng(0).random((1, 3, 256, 320), np.float32) * 255
    got, errors = {}, []

    def work(k):
        try:
            s = large.session()
            got[k] = (s, s.run(None, {"input.1": x})[0])
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and len(got) == 2
    assert got[0][0] is not got[1][0]                                   # a request per thread
    assert np.array_equal(got[0][1], got[1][1])
    assert large._compiled.result() is not None


def test_each_command_finds_its_own_record(monkeypatch, tmp_path):
    """A benchmark alternating two settings through fresh temporary files: each command's key is
    the same every time (folders left out, the configuration by content) and differs between
    the settings; an unknown command falls back to the last run's record."""
    from engine import ov_prefetch

    monkeypatch.setenv("SLADD_MODELS_DIR", str(tmp_path / "models"))
    a1, a2, b = tmp_path / "a1.yml", tmp_path / "a2.yml", tmp_path / "b.yml"
    a1.write_text("models: [{card: centerface-fast}]\n")
    a2.write_text("models: [{card: centerface-fast}]\n")
    b.write_text("models: [{card: centerface-fast}]\nengine: {precision: fp32}\n")
    key = ov_prefetch.command_key
    assert key(["run", "-i", "in1", "-o", "out1", "-k", str(a1), "-q"]) == \
        key(["run", "--input=in2", "-o", "out2", "-l", "logs", "--config", str(a2), "-q"])
    assert key(["run", "-i", "in", "-o", "out", "-k", str(a1)]) != key(["run", "-i", "in", "-o", "out", "-k", str(b)])
    assert key(["run", "-i", "in", "-o", "out"]) != key(["run", "-i", "in", "-o", "out", "--profile", "360"])
    for k, xml in (("A", "a.onnx"), ("B", "b.onnx")):
        monkeypatch.setattr(ov_prefetch, "_KEY", [k])
        monkeypatch.setattr(ov_prefetch, "_REMEMBERED", [])
        ov_prefetch.remember(xml, {"NUM_STREAMS": 2})
        ov_prefetch.remember("later.onnx", {"NUM_STREAMS": 2})            # only a process's first
    monkeypatch.setattr(ov_prefetch, "_KEY", ["A"])
    assert ov_prefetch.recorded() == {"model": "a.onnx", "config": {"NUM_STREAMS": 2}}
    monkeypatch.setattr(ov_prefetch, "_KEY", ["C"])
    assert ov_prefetch.recorded()["model"] == "b.onnx"                   # the last run's


def test_one_compiled_model_serves_every_size(ov_cache):
    """No compilation per frame size: the same request runs 1x3x64x96 and 1x3x96x64, each with
    the outputs ONNX Runtime gives for that size."""
    pytest.importorskip("openvino")
    from engine.runtimes.ov_passes import LargePasses

    path = resolve_model(load_card("centerface"))
    runtime = create_runtime("onnxruntime", device="cpu", threads=1)
    adapter = create_adapter(load_card("centerface"), path, runtime)
    large = LargePasses(dynamic_graph_path(Path(path)), threads=1, streams=1)
    rng = np.random.default_rng(3)
    first = large.session()
    for h, w in ((64, 96), (96, 64), (160, 128)):
        x = (rng.random((1, 3, h, w)) * 255).astype(np.float32)
        assert large.session() is first
        ours, theirs = first.run(None, {"input.1": x}), adapter._any_size.run(None, {"input.1": x})
        assert ours[0].shape == theirs[0].shape == (1, 1, h // 4, w // 4)
        assert np.abs(ours[0] - theirs[0]).max() < 0.02

def test_openvino_failures_fall_back_to_onnx_runtime(ov_cache, monkeypatch, portrait):
    """OpenVINO is an optimisation: a shape it cannot compile runs on ONNX Runtime with the same
    result, and a failure while choosing it leaves the run on ONNX Runtime."""
    pytest.importorskip("openvino")
    import importlib.metadata

    from engine.runtimes.ov_passes import LargePasses
    from engine.worker.build import _large_passes

    card = load_card("centerface")
    path = resolve_model(card)
    runtime = create_runtime("onnxruntime", device="cpu", threads=1)
    adapter = create_adapter(card, path, runtime)
    large = LargePasses(dynamic_graph_path(Path(path)), threads=1, streams=1)

    def broken(*a, **k):
        raise RuntimeError("Exception from src/plugins/intel_cpu: cannot compile")
    monkeypatch.setattr(large.core, "compile_model", broken)
    adapter._large = large
    view = np.ascontiguousarray(np.asarray(portrait.resize((640, 544))))
    assert large.session() is None
    ours = adapter.batch([view], 1.0, threshold=0.05)[0]
    adapter._large = None
    theirs = adapter.batch([view], 1.0, threshold=0.05)[0]
    assert np.array_equal(ours.boxes, theirs.boxes) and len(ours.boxes) >= 1

    def no_metadata(name):
        raise importlib.metadata.PackageNotFoundError(name)
    monkeypatch.setattr(importlib.metadata, "version", no_metadata)
    monkeypatch.setenv("SLADD_CACHE_DIR", str(ov_cache.parent / "fresh-cache"))
    assert _large_passes(1, 1)(Path(path), dynamic_graph_path(Path(path))) is None


def test_a_cache_that_cannot_be_written_compiles_in_memory(tmp_path):
    pytest.importorskip("openvino")
    from engine.runtimes.ov_passes import LargePasses

    graph = dynamic_graph_path(Path(resolve_model(load_card("centerface"))))
    blocker = tmp_path / "a-file"
    blocker.write_text("")                               # mkdir below a file fails, even as root
    large = LargePasses(graph, threads=1, streams=1, cache=blocker / "openvino")
    assert large.cache is None
    assert large.session() is not None
    assert not (blocker.parent / "openvino").exists()


def _start_ahead(monkeypatch, inp, out):
    """`sladd run -i inp -o out`'s start, on its own (this process's earlier state set aside):
    the prefetch thread has run the first image's pass when this returns."""
    from engine import first_pass, ov_prefetch

    for name in ("_THREAD", "_LOADED"):
        monkeypatch.setattr(ov_prefetch, name, [])
    monkeypatch.setattr(first_pass, "_KEPT", Held(misses=first_pass.MISSES))
    monkeypatch.setattr("engine.codecs.turbo._AHEAD", Held(misses=4, one=True))
    monkeypatch.setattr("sys.argv", ["sladd", "run", "-i", str(inp), "-o", str(out)])
    ov_prefetch.start()
    ov_prefetch.wait()
    assert first_pass.waiting()


def test_the_first_image_is_chosen_as_the_walk_lists_it(tmp_path, monkeypatch):
    """engine.first_pass guesses the run's first image: the first JPEG name in sorted order
    that is a regular file (no link, folder, preview, other type); nothing for a folder too
    large to list ahead or no -i."""
    from engine import first_pass

    d = tmp_path / "in"
    (d / "a_dir.jpg").mkdir(parents=True)
    (d / "b_preview.jpg").write_bytes(b"x")
    (d / "c.png").write_bytes(b"x")
    (d / "e.JPG").write_bytes(b"x")
    (d / "d.jpg").symlink_to(d / "e.JPG")
    (d / "f.jpeg").write_bytes(b"x")
    assert first_pass.first_image(["run", "-i", str(d), "-o", "out"]) == d / "e.JPG"
    assert first_pass.first_image(["run", f"--input={d}"]) == d / "e.JPG"
    assert first_pass.first_image(["run", "-o", "out"]) is None
    monkeypatch.setattr(first_pass, "MAX_LISTED", 3)
    assert first_pass.first_image(["run", "-i", str(d)]) is None


def test_the_start_runs_the_first_images_pass_and_the_detector_takes_it(ov_cache, portrait, monkeypatch, tmp_path):
    """The prefetch thread runs the first image's candidate pass at the recorded shape; the
    CenterFace adapter's large pass over that image (decoded and shrunk as a run does) takes
    those outputs instead of inferring, and they equal a fresh inference's (oracle: a new
    request of the same compiled model); any other input runs normally."""
    pytest.importorskip("openvino")
    from engine import first_pass, ov_prefetch
    from engine.codecs.turbo import TurboDecoder
    from engine.runtimes.ov_passes import LargePasses
    from engine.types import Job
    from tests.conftest import jpeg_bytes, scene_with_faces

    img, _ = scene_with_faces(portrait, h=480, w=656, faces=((60, 100, 240),))
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "a.jpg").write_bytes(jpeg_bytes(img))
    (inp / "b.jpg").write_bytes(jpeg_bytes(img[::-1].copy()))
    card = load_card("centerface")
    path = resolve_model(card)
    graph = dynamic_graph_path(Path(path))
    large = LargePasses(graph, threads=1, streams=2)
    monkeypatch.setattr(ov_prefetch, "_REMEMBERED", [])
    monkeypatch.setattr(ov_prefetch, "_KEY", ["command F"])
    ov_prefetch.remember(str(graph), large.config, (1, 3, 256, 352))     # 480x656 halved, padded to 32
    _start_ahead(monkeypatch, inp, tmp_path / "out")

    runtime = create_runtime("onnxruntime", device="cpu", threads=1)
    runtime.large_passes = lambda model, g, view=None: LargePasses(g, threads=1, streams=2, view=view)
    adapter = create_adapter(card, path, runtime)
    frame = TurboDecoder().decode(Job(path=inp / "a.jpg", key="a.jpg", output=tmp_path / "o.jpg", archive=None,
                                      error_dir=tmp_path, size=0, mtime_ns=0),
                                  (inp / "a.jpg").read_bytes())
    view = downscale_mean(frame.pixels, 2)
    blob = adapter.blob([view], 256, 352)
    ran = []
    monkeypatch.setattr(adapter._large, "_first_run", lambda shape: ran.append(tuple(shape)))
    fresh = adapter._large._load().result().create_infer_request()
    fresh.infer({0: blob})
    want = fresh.get_output_tensor(0).data.copy()

    sess = adapter._large.session()
    request = sess._request
    got = sess.run(None, {"input.1": blob})
    assert not first_pass.waiting() and ran == [(1, 3, 256, 352)]      # taken, once; shape noted
    assert np.array_equal(got[0], want)
    assert list(request.get_input_tensor().shape) == [1, 3, 0, 0] or \
        list(request.get_input_tensor().shape)[2:] == [0, 0]            # this request did not infer
    # Another image runs normally.
    other = adapter.blob([downscale_mean(frame.pixels[::-1].copy(), 2)], 256, 352)
    again = sess.run(None, {"input.1": other})
    assert list(request.get_input_tensor().shape) == [1, 3, 256, 352] and not np.array_equal(again[0], got[0])
    dets = adapter.batch([view], 0.5, threshold=0.2)[0]
    assert len(dets.boxes) >= 1                                          # the face


def test_the_view_gives_the_first_pass_of_a_new_frame_size(ov_cache, portrait, monkeypatch, tmp_path):
    """What `sladd models fetch` records (the cascade's shrink and padding, no shape yet) is
    enough for the very first run: the start makes the first image's input at its own size,
    equal to the cascade's (oracle: decoded by the run's decoder, kernels.downscale_mean,
    CenterFace's blob), and runs it. The view stays recorded when a later call has none."""
    pytest.importorskip("openvino")
    from engine import first_pass, ov_prefetch
    from engine.codecs.turbo import TurboDecoder
    from engine.models.centerface import CenterFaceAdapter, candidate_view
    from engine.runtimes.ov_passes import LargePasses
    from tests.conftest import jpeg_bytes, scene_with_faces

    card = load_card("centerface-fast")
    view = candidate_view(card)
    assert view == {"factor": round(1 / card.cascade.scale), "multiple": card.input.multiple}
    assert candidate_view(load_card("centerface")) is None                   # no cascade
    img, _ = scene_with_faces(portrait, h=500, w=700, faces=((60, 100, 240),))
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "only.jpg").write_bytes(jpeg_bytes(img))
    graph = dynamic_graph_path(Path(resolve_model(card)))
    monkeypatch.setattr(ov_prefetch, "_REMEMBERED", [])
    monkeypatch.setattr(ov_prefetch, "_KEY", ["fetch"])
    large = LargePasses(graph, threads=1, streams=2)
    ov_prefetch.remember(str(graph), large.config)                           # a card without a cascade first
    ov_prefetch.remember(str(graph), large.config, view=view)                # then the cascade's
    ov_prefetch.remember(str(graph), large.config, view={"factor": 9, "multiple": 1})   # once per process
    monkeypatch.setattr(ov_prefetch, "_REMEMBERED", [])                     # a new process, no view given
    ov_prefetch.remember(str(graph), large.config)
    assert ov_prefetch.recorded() == {"model": str(graph), "config": large.config, "view": view}

    _start_ahead(monkeypatch, inp, tmp_path / "out")
    f, m = view["factor"], view["multiple"]
    # Its decoded pixels go to the run's decoder, once, for the same bytes (oracle: a decode).
    import engine.codecs.turbo as turbo

    data = (inp / "only.jpg").read_bytes()
    assert len(turbo._AHEAD.items) == 1 and turbo._AHEAD.items[0][0] == data
    kept, coefs = turbo._AHEAD.items[0][1]              # with its coefficients where the helper is built
    assert TurboDecoder().decode_pixels(jpeg_bytes(img[::-1].copy())) is not kept         # other bytes
    pixels = TurboDecoder().decode_pixels(data)
    assert pixels is kept and turbo._AHEAD.items == []
    from engine.codecs import coefjpeg

    assert (coefs is not None) == coefjpeg.available()
    assert np.array_equal(pixels, TurboDecoder().decode_pixels(data))
    small = downscale_mean(pixels, f)
    ih, iw = -(-small.shape[0] // m) * m, -(-small.shape[1] // m) * m
    want = CenterFaceAdapter.blob([small], ih, iw)
    assert first_pass.take(want, ov_prefetch.made_by("another.onnx", large.config)) is None    # not its model
    assert first_pass.take(want, ov_prefetch.made_by(str(graph), large.config)) is not None
    assert not first_pass.waiting()
    assert first_pass.input_for(inp / "only.jpg", [1, 3, ih, iw]) is not None   # shape only: found too
    assert first_pass.input_for(inp / "only.jpg", [1, 3, ih + 32, iw]) is None  # no shrink gives it
    # A recorded shape the frame's input does not have (360° tiles, other frames): no guess.
    assert first_pass.input_for(inp / "only.jpg", [1, 3, ih, iw], view) is not None
    assert first_pass.input_for(inp / "only.jpg", [1, 3, 640, 640], view) is None
    monkeypatch.setattr(first_pass, "MAX_INPUT", ih * iw - 1)                 # too large a guess
    assert first_pass.input_for(inp / "only.jpg", None, view) is None
    # Where no input is guessed, the frame is not even decoded (a 360 run's first panorama was
    # decoded beside the start for nothing, and its decoder waited for it).
    turbo.drop_decoded()
    decoded = []
    monkeypatch.setattr(coefjpeg, "decode", lambda d: decoded.append(1))
    monkeypatch.setattr(TurboDecoder, "decode_pixels", lambda *a, **k: decoded.append(1))
    assert first_pass.input_for(inp / "only.jpg", [1, 3, 640, 640], view) is None
    assert decoded == [] and turbo._AHEAD.items == []


def test_the_start_reads_only_regular_files_and_skips_done_images(tmp_path):
    """A name swapped for a FIFO or a link after the listing is not read (no hang, nothing
    outside the folder); an image whose output exists (a rerun) is not the guess."""
    import os

    from engine import first_pass
    from tests.conftest import jpeg_bytes

    d, out = tmp_path / "in", tmp_path / "out"
    d.mkdir()
    out.mkdir()
    good = jpeg_bytes(np.full((64, 96, 3), 128, np.uint8))
    (d / "a.jpg").write_bytes(good)
    (d / "b.jpg").write_bytes(good)
    (out / "a.jpg").write_bytes(b"done earlier")
    assert first_pass.first_image(["run", "-i", str(d), "-o", str(out)]) == d / "b.jpg"
    assert first_pass.first_image(["run", "-i", str(d)]) == d / "a.jpg"
    os.mkfifo(tmp_path / "fifo.jpg")
    assert first_pass._read_regular(tmp_path / "fifo.jpg") is None          # returns, does not block
    (tmp_path / "link.jpg").symlink_to(d / "a.jpg")
    assert first_pass._read_regular(tmp_path / "link.jpg") is None
    assert first_pass._read_regular(d / "a.jpg") == good
    assert first_pass.input_for(tmp_path / "fifo.jpg", [1, 3, 64, 96]) is None


def test_outputs_of_another_model_are_never_taken_and_unused_ones_dropped(ov_cache, monkeypatch):
    """What the start ran is taken only by sessions of the same model file and settings: a
    LargePasses of other settings runs its own pass (and drops what was kept); a run that will not
    use OpenVINO drops the kept pass and the decoded pixels."""
    pytest.importorskip("openvino")
    import engine.codecs.turbo as turbo
    from engine import first_pass, ov_prefetch
    from engine.runtimes.ov_passes import LargePasses

    monkeypatch.setattr(first_pass, "_KEPT", Held(misses=first_pass.MISSES))
    monkeypatch.setattr(turbo, "_AHEAD", Held(misses=4, one=True))
    graph = dynamic_graph_path(Path(resolve_model(load_card("centerface"))))
    x = np.random.default_rng(1).random((1, 3, 64, 96), np.float32) * 255
    fake = {"537": np.zeros((1, 1, 16, 24), np.float32)}
    one = LargePasses(graph, threads=1, streams=1)
    first_pass.keep(x, fake, ov_prefetch.made_by(str(graph), {**one.config, "NUM_STREAMS": 9}))
    got = one.session().run(None, {"input.1": x})
    assert first_pass._KEPT.items == [] and np.abs(got[0]).max() > 0            # its own pass, kept one dropped
    first_pass.keep(x, fake, ov_prefetch.made_by(str(graph), one.config))
    turbo.keep_decoded(b"bytes", np.zeros((2, 2, 3), np.uint8))
    monkeypatch.setattr(ov_prefetch, "_THREAD", [])
    ov_prefetch.release(drop=True)
    assert first_pass._KEPT.items == [] and turbo._AHEAD.items == []
