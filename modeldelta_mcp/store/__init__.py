"""The result store: reports persisted under a key, written atomically, computed once.

Takes keys and plain data, never pipeline objects (it imports nothing from sources, engine, diagnosis or
compare): `keys` hashes a pair's identity, `results` keeps reports and their index, `jobs` runs each
comparison once with joinable progress, `journal` lets an interrupted comparison resume, `atomic` writes.
"""

from modeldelta_mcp.store.atomic import atomic_write_text
from modeldelta_mcp.store.jobs import Compute, Job, JobRunner, ProgressSink
from modeldelta_mcp.store.keys import KEYED_OPTIONS, REPORT_ID_PATTERN, PairIdentity, check_report_id, is_report_id
from modeldelta_mcp.store.results import COMPUTE_LOG_ENV, PairRef, ResultStore, default_cache_dir

__all__ = [
    "COMPUTE_LOG_ENV",
    "KEYED_OPTIONS",
    "REPORT_ID_PATTERN",
    "Compute",
    "Job",
    "JobRunner",
    "PairIdentity",
    "PairRef",
    "ProgressSink",
    "ResultStore",
    "atomic_write_text",
    "check_report_id",
    "default_cache_dir",
    "is_report_id",
]
