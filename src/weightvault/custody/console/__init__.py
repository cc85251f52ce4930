"""The approver console: web pages of the custody service where approvers sign in with a passkey
(WebAuthn) and approve or deny requests, each decision a fresh assertion over the request.

Import-light on purpose: :mod:`.signatures` and :mod:`.ledger` need only ``cryptography`` (the
offline ``audit verify`` uses them); the pages (:mod:`.routes`, FastAPI, Jinja2 and the
``webauthn`` library) come with the ``server`` extra.
"""
