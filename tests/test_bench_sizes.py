"""benchmarks/bench_sizes.py on a tiny configuration: two 640x480 corpora (0 and 2 faces per
image, 2 images each), faces profile, one run. The figures are not the point (at this size the
per-image time is within process-start noise); the plumbing, the report's columns and the face
check are."""
import json

from benchmarks import bench_sizes

COLUMNS = ("| profile | image | MP | faces/image | s/image | MP/s | whole command s/image | detect ms/image | "
           "peak RSS MB | faces anonymised |")
ROW_KEYS = {"kind", "profile", "series", "width", "height", "mp", "faces_per_image", "images", "runs", "wall_s_n",
            "wall_s_1", "per_image_s", "mp_per_s", "whole_s_per_image", "run_s", "detect_ms", "detect_ms_run",
            "stage_ms", "stage_ms_run", "peak_rss_mb", "faces_found", "faces_total", "machine", "models"}


def test_bench_sizes_tiny(tmp_path, capsys):
    corpora, results = tmp_path / "corpora", tmp_path / "results"
    argv = ["--count", "2", "--runs", "1", "--sizes", "640x480", "--size-faces", "2", "--faces", "0,2",
            "--faces-size", "640x480", "--profiles", "faces", "--face-heights", "30,36,42",
            "--out-dir", str(corpora), "--results", str(results)]
    assert bench_sizes.main(argv) == 0
    md_path, jsonl_path = bench_sizes.report_paths(results)
    lines = [json.loads(x) for x in jsonl_path.read_text().splitlines()]
    rows = [r for r in lines if r["kind"] == "row"]
    (derived,) = [r for r in lines if r["kind"] == "derived"]
    # 640x480 with 2 faces is in both series: measured once.
    assert sorted((r["faces_per_image"], tuple(r["series"])) for r in rows) == [(0, ("faces",)),
                                                                               (2, ("faces", "size"))]
    for r in rows:
        assert ROW_KEYS <= r.keys()
        assert r["profile"] == "faces" and r["images"] == 2 and (r["width"], r["height"]) == (640, 480)
        assert r["faces_total"] == 2 * r["faces_per_image"]
        assert r["faces_found"] == r["faces_total"]                   # every pasted face anonymised
        assert r["detect_ms"] is not None and r["detect_ms_run"] > 0 and r["peak_rss_mb"] > 50
        assert r["per_image_s"] is not None and r["wall_s_n"] > 0 and r["wall_s_1"] > 0
    assert derived["profile"] == "faces" and derived["ms_per_face"] is not None
    assert derived["ms_per_mp"] is None                               # one size: no slope
    md = md_path.read_text()
    assert md.count(COLUMNS) == 2
    assert "| faces | 640x480 | 0.3 | 2 |" in md and "| 4/4 |" in md and "| 0/0 |" in md
    assert "added cost per face" in md and "cost per MP" in md
    # The corpora are cached: a second run reuses them (same files, same truth).
    truth = (corpora / "640x480_f2_n2" / "all" / "faces.json").stat().st_mtime_ns
    assert bench_sizes.main(argv + ["--faces", ""]) == 0
    assert (corpora / "640x480_f2_n2" / "all" / "faces.json").stat().st_mtime_ns == truth
    assert "By number of faces" not in md_path.read_text()


def test_corpus_never_pastes_a_portrait_over_an_earlier_face(tmp_path):
    """A crowded corpus keeps only the faces that are visible: a portrait with no free place is
    left out rather than pasted over an earlier face (which stayed in the ground truth)."""
    import json

    from benchmarks.corpus import build

    out = build(tmp_path / "c", 3, (480, 640), faces_per_image=8, seed=1, face_heights=(60, 90))
    truth = json.loads((out / "faces.json").read_text())
    for boxes in truth.values():
        assert 0 < len(boxes) < 8                    # crowded: some portraits found no place
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)
