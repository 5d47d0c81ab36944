"""The driver side of a run: walk, resume policy, ledger, database spool, error tree, deletion,
progress and summary, over the worker's stages (engine.worker)."""
from engine.driver.driver import Driver, ResumePolicy, ledger_path
from engine.driver.stats import RunStats, summary_lines

__all__ = ["Driver", "ResumePolicy", "RunStats", "ledger_path", "summary_lines"]
