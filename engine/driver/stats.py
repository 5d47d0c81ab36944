"""What a run did: counts, timings, why it stopped; and the summary printed at its end."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

__all__ = ["RunStats", "summary_lines"]


@dataclass
class RunStats:
    found: int = 0
    skipped_done: int = 0
    skipped_failed: int = 0
    anonymised: int = 0          # written with pixels changed
    unchanged: int = 0           # written, nothing to mask (copied byte for byte)
    failed: int = 0
    no_space: int = 0            # of `failed`: outputs not written for want of space (retried by the next run)
    detections: dict = field(default_factory=dict)
    db_written: int = 0
    db_rejected: int = 0
    db_pending: int = 0
    fatal: Optional[str] = None    # why the run stopped early, if it did
    unlisted: list = field(default_factory=list)       # (folder, reason): its images were not seen
    skipped_links: list = field(default_factory=list)  # (path, reason): symbolic links, special files
    seconds: float = 0.0
    stage_seconds: dict = field(default_factory=dict)

    @property
    def processed(self) -> int:
        return self.anonymised + self.unchanged + self.failed


def summary_lines(stats: RunStats, input_dir, output_dir, archive_dir, ledger: Path) -> list[str]:
    from engine.fsutil import escape_line

    rate = stats.processed / stats.seconds if stats.seconds > 0 else 0.0
    lines = [
        "Anonymisation finished",
        f"Input folder: {escape_line(input_dir)}",
        f"Output folder: {escape_line(output_dir)}",
        f"Archive folder: {escape_line(archive_dir) if archive_dir else '-'}",
        f"Identified images: {stats.found}",
        f"Anonymised (pixels masked): {stats.anonymised}",
        f"Nothing to mask (copied unchanged): {stats.unchanged}",
        f"Skipped, done earlier: {stats.skipped_done}",
        f"Skipped, failed earlier (use --retry-failed): {stats.skipped_failed}",
        f"Skipped, symbolic links or not regular files: {len(stats.skipped_links)}",
        f"Failed: {stats.failed}" + (f" (of which {stats.no_space} found no space to be written; the next run "
                                     "tries them again)" if stats.no_space else ""),
        f"DB rows written {stats.db_written}, rejected {stats.db_rejected}, pending {stats.db_pending}",
        f"Objects found: {', '.join(f'{k} {v}' for k, v in sorted(stats.detections.items())) or 'none'}",
        f"Total time spent: {stats.seconds:.1f} s ({rate:.2f} images/s)",
        "Per image (ms, summed over threads and workers): " + (", ".join(
            f"{k} {v * 1000 / max(1, stats.processed):.2f}" for k, v in stats.stage_seconds.items()) or "-"),
        f"Ledger: {escape_line(ledger)}",
    ]
    if stats.unlisted:
        # Paths in stats.unlisted are already escaped for one line (Tree.paths).
        lines.append(f"Run incomplete: {len(stats.unlisted)} folder(s) could not be listed; their images were "
                     "not processed (fix the access rights, then rerun):")
        lines += [f"  cannot list folder {folder}: {reason}" for folder, reason in stats.unlisted[:20]]
        if len(stats.unlisted) > 20:
            lines.append(f"  ... and {len(stats.unlisted) - 20} more (see the log)")
    if stats.fatal:
        lines.append(f"Run stopped early: {stats.fatal}")
    if stats.failed > stats.no_space:
        lines.append(f"Failed images are listed in the ledger and copied to "
                     f"{escape_line(Path(output_dir).resolve())}_error")
    return lines
