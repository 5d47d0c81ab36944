"""Metadata throughput against decoding, on the same road-style JPEGs with vendor XML.

    python -m benchmarks.bench_metadata [--images 1000] [--size 2448x2048]

Times, per image: EXIF + XML -> the 52-key JSON (build_record + dumps) and a full TurboJPEG
decode of the same file. Metadata runs in the output pool, so it must cost far less than decode.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from engine.codecs import TurboDecoder
from engine.demo import _PROPS_XML, _REFLINK_XML, jpeg_with_exif, road_scene
from engine.jpeg import parse_jpeg
from engine.meta import MetaContext, build_record, dumps, read_exif
from engine.types import Job


def main(argv=None):
    ap = argparse.ArgumentParser(description="metadata vs decode throughput")
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--size", default="2448x2048")
    args = ap.parse_args(argv)
    w, h = (int(v) for v in args.size.split("x"))
    d = Path(tempfile.mkdtemp(prefix="sladd-meta-")) / "tilSladding" / "2022" / "EV00006"
    name = "EV00006_S1D1_m01234_f1.jpg"
    path = jpeg_with_exif(road_scene(h, w), d / name, reflink_xml=_REFLINK_XML,
                          properties_xml=_PROPS_XML.format(name=name, meter="1234.0"))
    data = path.read_bytes()
    ctx = MetaContext()
    t = time.perf_counter()
    for _ in range(args.images):
        info = parse_jpeg(data)
        rec, _ = build_record(read_exif(info.exif), info.width, info.height, str(path), ctx, file_path=path,
                              detections={"face": 2})
        dumps(rec)
    meta = (time.perf_counter() - t) / args.images
    dec = TurboDecoder()
    job = Job(path=path, key=name, output=path, archive=None, error_dir=d, size=0, mtime_ns=0)
    runs = []
    for _ in range(max(5, args.images // 50)):
        t = time.perf_counter()
        dec.decode(job, data)
        runs.append(time.perf_counter() - t)
    decode = statistics.median(runs)
    print(f"{args.images} images {w}x{h}: metadata {meta * 1000:.2f} ms/image ({args.images * meta:.2f} s in all), "
          f"decode {decode * 1000:.1f} ms/image ({args.images * decode:.1f} s for {args.images}); "
          f"metadata = {meta / decode:.1%} of decode")


if __name__ == "__main__":
    main()
