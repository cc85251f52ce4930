"""Structured access: jobs that run next to the weights in an isolated worker.

Kinds: query, evaluate, finetune, inspect (:mod:`.spec`); the worker and its isolation
(:mod:`.sandbox`, :mod:`.worker`, :mod:`.kinds`); per-model policy and budgets (:mod:`.policy`);
signed results that verify offline against the custody's log (:mod:`.result`).
"""

from __future__ import annotations

from weightvault.access.policy import TIERS, AccessPolicy, extraction_days
from weightvault.access.result import (
    PREDICATE_TYPE,
    JobResultVerification,
    make_result_statement,
    sign_result,
    verify_job_result,
)
from weightvault.access.sandbox import Isolation, Limits, WorkerOutcome, check_isolation, run_worker
from weightvault.access.spec import KINDS, JobRequest, parse_dataset, parse_job_request

__all__ = [
    "KINDS",
    "PREDICATE_TYPE",
    "TIERS",
    "AccessPolicy",
    "Isolation",
    "JobRequest",
    "JobResultVerification",
    "Limits",
    "WorkerOutcome",
    "check_isolation",
    "extraction_days",
    "make_result_statement",
    "parse_dataset",
    "parse_job_request",
    "run_worker",
    "sign_result",
    "verify_job_result",
]
