"""Image metadata: EXIF + vendor XML -> the reference JSON; previews; output paths."""
from engine.meta.exif import ExifData, read_exif
from engine.meta.record import KEYS, MetaContext, build_record, dumps

__all__ = ["ExifData", "read_exif", "KEYS", "MetaContext", "build_record", "dumps"]
