"""The deployment's one VAPID key pair: created once, kept, never silently replaced.

Regenerating the key would orphan every subscriber (their subscriptions are bound
to the old public key), so creation refuses to overwrite without `force`, and a
key given in the environment is decided to be PEM text or a path at load time.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .errors import SettingsError
from .settings import Settings

KEY_FILE = "vapid_private.pem"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode base64url with or without padding; raises ValueError on junk."""
    if not isinstance(text, str) or not text.isascii():
        raise ValueError("not base64url")
    cleaned = text.rstrip("=")
    if "+" in cleaned or "/" in cleaned:
        # Browsers send base64url; accept the standard alphabet too, as some polyfills do.
        cleaned = cleaned.replace("+", "-").replace("/", "_")
    return base64.urlsafe_b64decode(cleaned + "=" * (-len(cleaned) % 4))


@dataclass(frozen=True)
class VapidKey:
    private_key: ec.EllipticCurvePrivateKey

    @property
    def public_bytes(self) -> bytes:
        """The 65-byte uncompressed point browsers take as applicationServerKey."""
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )

    @property
    def public_key_b64(self) -> str:
        return b64url(self.public_bytes)

    def private_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def _from_pem(pem: bytes, source: str) -> VapidKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except ValueError as exc:
        raise SettingsError("STORYPUSH_VAPID_PRIVATE_KEY", f"is not a readable PEM key ({source}): {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise SettingsError("STORYPUSH_VAPID_PRIVATE_KEY", f"must be a P-256 EC key ({source})")
    return VapidKey(key)


def key_path(settings: Settings) -> Path:
    return settings.data_dir / KEY_FILE


def load_key(settings: Settings) -> VapidKey | None:
    """The configured key: env PEM text, env path, or the data dir's file; None if none exists."""
    configured = settings.vapid_private_key
    if configured:
        if "-----BEGIN" in configured:
            return _from_pem(configured.encode(), "PEM text")
        path = Path(configured)
        if not path.is_file():
            raise SettingsError("STORYPUSH_VAPID_PRIVATE_KEY", f"is neither PEM text nor a readable file ({path})")
        return _from_pem(path.read_bytes(), str(path))
    path = key_path(settings)
    if path.is_file():
        return _from_pem(path.read_bytes(), str(path))
    return None


def create_key(settings: Settings, force: bool = False) -> tuple[VapidKey, Path]:
    """Write a new P-256 key (mode 0600) into the data dir.

    Raises:
        FileExistsError: the key exists and `force` is not set.
    """
    path = key_path(settings)
    if path.exists() and not force:
        raise FileExistsError(str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    key = VapidKey(ec.generate_private_key(ec.SECP256R1()))
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key.private_pem())
    os.replace(tmp, path)
    return key, path


def load_or_create_key(settings: Settings) -> VapidKey:
    """For `storypush dev`: the existing key, or a new one on first start."""
    key = load_key(settings)
    if key is not None:
        return key
    try:
        return create_key(settings)[0]
    except FileExistsError:  # another process created it in between
        key = load_key(settings)
        assert key is not None
        return key


def require_key(settings: Settings) -> VapidKey:
    key = load_key(settings)
    if key is None:
        raise SettingsError(
            "STORYPUSH_VAPID_PRIVATE_KEY",
            f"is not set and {key_path(settings)} does not exist (run `storypush vapid init`)",
        )
    return key
