"""The OpenSSF Model Signing (OMS) v1.0 format: pure data in, data out.

* :mod:`weightvault.oms.dsse` — DSSE envelope and its pre-authentication encoding;
* :mod:`weightvault.oms.bundle` — the Sigstore bundle (v0.3 written, older shapes read);
* :mod:`weightvault.oms.manifest` — resources, serialization parameters, the root digest and
  the in-toto statement that carries them.

Nothing here reads model files or checks signatures; :mod:`weightvault.signing` does.
"""
