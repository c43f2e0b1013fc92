"""The node's Ed25519 signing key: made once at init, kept 0600, never printed.

cryptography's `serialization` (PEM, its SSH formats and the ciphers they bring: ~25 ms to
import) is imported only by the functions that turn keys into bytes and back; checking a
signature needs Ed25519 alone, and `twinsync status` checks the peers' fingerprints on every
call (tests/unit/test_cli_imports.py holds that it never loads them).
"""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from folders.errors import KeyFileError
from folders.files import write_atomic

PUBLIC_PREFIX = "ed25519:"


def generate_keypair(private_path: Path, public_path: Path) -> Ed25519PrivateKey:
    """Create a new key pair; the private half is written with mode 0600 from the first byte."""
    from cryptography.hazmat.primitives import serialization  # see the module docstring

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_atomic(private_path, pem, mode=0o600)
    write_atomic(public_path, (public_key_text(key.public_key()) + "\n").encode(), mode=0o644)
    return key


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Refuse a key others can read: a leaked signing key lets anyone forge this node's frames."""
    from cryptography.hazmat.primitives import serialization  # see the module docstring

    path = Path(path)
    try:
        st = path.stat()
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"Cannot read the signing key {path} ({exc.strerror}); "
                           "restore it from a backup or make a new node home with `twinsync init`.") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"The signing key {path} is readable by other users; "
                           f"run `chmod 600 {path}`.")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except ValueError:
        raise KeyFileError(f"The signing key {path} is not a valid PEM key; restore it from a backup.") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"The signing key {path} is not an Ed25519 key; restore it from a backup.")
    return key


def public_key_text(key: Ed25519PublicKey) -> str:
    """`ed25519:<base64 of the 32 raw bytes>`: short enough for an invite line and a TOML value."""
    from cryptography.hazmat.primitives import serialization  # see the module docstring

    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return PUBLIC_PREFIX + base64.b64encode(raw).decode("ascii")


def parse_public_key(text: str) -> Ed25519PublicKey:
    """Inverse of `public_key_text`; raises KeyFileError naming the bad value."""
    if not text.startswith(PUBLIC_PREFIX):
        raise KeyFileError(f"Public key {text[:20]!r} does not start with {PUBLIC_PREFIX!r}.")
    try:
        raw = base64.b64decode(text[len(PUBLIC_PREFIX):], validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise KeyFileError(f"Public key {text[:20]!r}… is not 32 bytes of base64.") from None


def sign(key: Ed25519PrivateKey, data: bytes) -> str:
    """`ed25519:<base64 signature>`, the form frames and manifests carry."""
    return PUBLIC_PREFIX + base64.b64encode(key.sign(data)).decode("ascii")


def verify(public: Ed25519PublicKey, data: bytes, signature: str) -> bool:
    """True when `signature` (as made by `sign`) is valid for `data`; never raises on junk."""
    if not isinstance(signature, str) or not signature.startswith(PUBLIC_PREFIX):
        return False
    try:
        public.verify(base64.b64decode(signature[len(PUBLIC_PREFIX):], validate=True), data)
    except (InvalidSignature, ValueError):
        return False
    return True


def is_private_file_safe(path: Path) -> bool:
    """Mode check used by `doctor`: no group or other bits."""
    return not (os.stat(path).st_mode & (stat.S_IRWXG | stat.S_IRWXO))
