"""The custody service: registry, just-in-time grants with M-of-N signed approvals, egress
budgets, alerts, and an audit log every request goes through (``weightvault serve``).

Public pieces (import the module you need; nothing heavy is imported here):

* :mod:`weightvault.custody.config` -- :class:`ServiceConfig` (data folder, database, blobs, KEK).
* :mod:`weightvault.custody.service` -- :class:`Custody`, the decisions, independent of HTTP.
* :mod:`weightvault.custody.app` -- :func:`create_app`, the ASGI app; :mod:`.server` runs it.
* :mod:`weightvault.custody.client` -- :class:`VaultClient` for the ``weightvault vault`` commands.
* :mod:`weightvault.custody.approvals` -- approval statements signed with Ed25519 (DSSE).
* :mod:`weightvault.custody.policy` -- :class:`ModelPolicy`.
* :mod:`weightvault.custody.audit` -- :class:`AuditTrail` and :func:`verify_audit` (offline).
* :mod:`weightvault.custody.breakglass` -- Shamir split/recover over GF(2^8), authenticated.
"""
