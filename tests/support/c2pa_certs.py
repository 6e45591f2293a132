"""A throwaway certificate authority and C2PA signing certificate, made in the test run: the development signer
of scripts/dev_certs.py, so the tests sign with exactly what a developer gets."""

from __future__ import annotations

from scripts.dev_certs import SigningIdentity, make_signing_identity

__all__ = ["SigningIdentity", "make_signing_identity"]
