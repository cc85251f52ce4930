"""The custody service's decisions, independent of HTTP: :class:`Custody` composes the rooms.

One replica holds the database, the blob store, the service KEK, the audit trail and the alert
sink, and gives them to the rooms that use them, each with one job:

* :attr:`Custody.identities` (:mod:`.identities`): authentication, principals, tokens;
* :attr:`Custody.models` (:mod:`.models`): models, policies, the inventory;
* :attr:`Custody.push` (:mod:`.push`): new versions (receive, verify, scan, encrypt, store);
* :attr:`Custody.grants` (:mod:`.grants`): requests, approvals, denials, revocation, and the one
  grant authorization function;
* :attr:`Custody.egress` (:mod:`.egress`): grant listings and ranged pulls within budgets;
* :attr:`Custody.auditing` (:mod:`.auditing`): each request's audit entry, denials, and what
  auditors read.

Each public method of a room takes a :class:`RequestContext` and returns a result or raises a
:class:`~weightvault.errors.WeightvaultError` that the HTTP layer (:mod:`.http`) turns into a
status code (:mod:`.errors` lists the refusals with statuses of their own); the order every
state change follows is in :mod:`.context`.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time
from collections.abc import Callable

from sqlalchemy import select

from weightvault.crypt import parse_identity
from weightvault.custody.alerts import AlertSink
from weightvault.custody.audit import AuditTrail
from weightvault.custody.auditing import Auditing
from weightvault.custody.blobs import BlobStore, open_blob_store
from weightvault.custody.config import ServiceConfig
from weightvault.custody.context import RequestContext, Shared
from weightvault.custody.egress import Pulls
from weightvault.custody.fingerprints import FINGERPRINT_KEY_FILE, Fingerprinter
from weightvault.custody.gates import Gates
from weightvault.custody.grants import Grants
from weightvault.custody.identities import Identities
from weightvault.custody.jobs import Jobs
from weightvault.custody.jobs_runner import JobRunner
from weightvault.custody.kek import ServiceKek
from weightvault.custody.models import Models
from weightvault.custody.push import Push
from weightvault.custody.risk import RiskRegister
from weightvault.custody.store import FingerprintedFile, ModelVersion, Store, utcnow

__all__ = ["Custody", "RequestContext"]


class Custody:
    """One replica of the service: database, blobs, service KEK, audit trail, alerts, rooms."""

    def __init__(self, config: ServiceConfig, *, clock: Callable[[], dt.datetime] = utcnow) -> None:
        config.prepare()
        self.config = config
        self.clock = clock
        self.store = Store(config.database_url)
        self.store.create_schema()
        self.blobs: BlobStore = open_blob_store(config.blobs, config.data_dir)
        self.kek = ServiceKek(parse_identity(config.kek_spec))
        self.staging = config.data_dir / "staging"
        shutil.rmtree(self.staging, ignore_errors=True)  # plaintext left by a killed upload
        self.staging.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.trail = AuditTrail(
            config.log_location,
            config.log_origin,
            config.load_log_signer(),
            config.load_hmac_key(),
            replica=config.replica,
            checkpoint_every=config.checkpoint_every,
            checkpoint_interval_s=config.checkpoint_interval_s,
        )
        self.alerts = AlertSink(self.trail.append, config.webhook_url, replica=config.replica)
        self.auditing = Auditing(config, self.store, clock, self.trail, self.alerts)
        shared = Shared(config, self.store, clock, self.auditing.record)
        self.identities = Identities(shared, self.trail.hmac_secret)
        self.models = Models(shared)
        self.push = Push(shared, self.blobs, self.kek, self.staging)
        self.grants = Grants(shared)
        marks = Fingerprinter(
            self.blobs, self.kek, self.staging, config.data_dir / FINGERPRINT_KEY_FILE
        )
        self.egress = Pulls(shared, self.blobs, self.kek, self.trail, self.alerts, marks)
        self.push.alerts = self.grants.alerts = self.alerts  # incident signals
        self.jobs = self._jobs_room(shared)
        self.gates = Gates(shared, self.trail)  # release gates of deploy/release grants
        self.gates.kek = self.kek  # break-glass overrides prove the shares rebuild this KEK
        self.grants.gate, self.grants.gate_view = self.gates.gate_request, self.gates.request_view
        self.grants.fingerprint_id = marks.grant_mark
        self.risks = RiskRegister(shared)
        self.sweep_orphans()

    def _jobs_room(self, shared: Shared) -> Jobs:
        """Structured access: jobs next to the weights, results signed with the log key."""
        signer = self.config.load_log_signer()
        unisolated = self.config.extra.get("allow_unisolated_jobs", "") == "true" or (
            os.environ.get("WEIGHTVAULT_ALLOW_UNISOLATED_JOBS") == "1"
        )
        runner = JobRunner(
            shared,
            self.blobs,
            self.kek,
            signer.sign_message,
            signer.public_key,
            workers=int(self.config.extra.get("job_workers", "1")),
            allow_unisolated=unisolated,
        )
        runner.resume()
        return Jobs(shared, runner, signer.sign_message, signer.public_key)

    def bootstrap_admin(self, name: str, *, via: str = "serve --init-admin") -> str | None:
        """Create the first admin and return its token; None if principals exist already."""
        return self.identities.bootstrap_admin(name, via=via)

    def sweep_orphans(self, *, grace_s: float = 3600.0) -> list[str]:
        """Remove ciphertext of uploads that died before registration (older than ``grace_s``,
        so uploads still running on another replica are left alone)."""
        with self.store.session(read_only=True) as session:
            referenced = set(session.scalars(select(ModelVersion.blob_prefix)))
            referenced |= {  # grants' fingerprinted copies
                key.split("/")[0] for key in session.scalars(select(FingerprintedFile.blob_key))
            }
        try:
            return self.blobs.sweep(referenced, time.time() - grace_s)
        except Exception:  # a failed sweep must not stop the service; it runs at every start
            return []

    def close(self) -> None:
        self.alerts.close()
        self.trail.close()
        self.store.dispose()
