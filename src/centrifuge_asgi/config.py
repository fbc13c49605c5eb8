"""Typed configuration with Centrifugo v6 key names (placeholder: being written)."""

from __future__ import annotations

import msgspec


class TokenConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """``client.token`` (and, inlined, ``client.subscription_token``) of Centrifugo v6."""

    hmac_secret_key: str = ""
    hmac_previous_secret_key: str = ""
    hmac_previous_secret_key_valid_until: int = 0
    rsa_public_key: str = ""
    ecdsa_public_key: str = ""
    jwks_public_endpoint: str = ""
    audience: str = ""
    audience_regex: str = ""
    issuer: str = ""
    issuer_regex: str = ""
    user_id_claim: str = ""
    insecure_skip_jwks_endpoint_safety_check: bool = False
