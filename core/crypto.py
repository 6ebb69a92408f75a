"""Secrets Parley must read back (a tenant tool's header values and signing secret), encrypted at rest with
Fernet (AES-128-CBC and HMAC-SHA256, from `cryptography`) under a key derived from SECRET_KEY. A key in
SECRET_KEY_FALLBACKS still decrypts, so SECRET_KEY can be rotated; what is written again is encrypted under
the new one."""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

_INFO = b"parley.secrets.v1"


def _fernet(secret: str) -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(secret.encode())
    return Fernet(base64.urlsafe_b64encode(key))


def _keys() -> MultiFernet:
    return MultiFernet([_fernet(settings.SECRET_KEY), *(_fernet(key) for key in settings.SECRET_KEY_FALLBACKS)])


def secret_encrypt(value: Any) -> str:
    """The JSON value, encrypted (a text safe to store)."""
    return _keys().encrypt(json.dumps(value).encode()).decode()


def secret_decrypt(token: str) -> Any:
    """The value secret_encrypt() was given; ValueError when the token is altered or of an unknown key."""
    try:
        return json.loads(_keys().decrypt(token.encode()))
    except InvalidToken:
        raise ValueError("The secret cannot be decrypted: SECRET_KEY changed without SECRET_KEY_FALLBACKS.") from None
