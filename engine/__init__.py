"""sladd: streaming anonymisation of street-level imagery."""
import os as _os

# Parallelism is the stream's (decode, detect and write threads): NumPy's OpenBLAS would start one
# thread per core at its first matrix product (the lossless path's small DCTs) and keep them
# spinning, taking ~5% of a run's CPU from the detect threads on 2 cores. Set before NumPy loads;
# a value the user set is kept.
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
__all__ = ["__version__"]
