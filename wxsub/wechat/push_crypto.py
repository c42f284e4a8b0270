"""WeChat message-push crypto: signatures and the safe-mode AES envelope.

Signatures are sha1 hex of the lexicographically sorted concatenation of the parts
(token, timestamp, nonce[, encrypt]). Safe mode: AES-256-CBC with the 32-byte key decoded from
the 43-char EncodingAESKey, IV = first 16 key bytes, PKCS#7 padding to 32-byte blocks, and the
plaintext ``16 random bytes + 4-byte big-endian length + message + appid``.

All failures raise :class:`PushRejected` with a short reason; no message ever carries the key,
the token or the plaintext.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import struct

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from wxsub.errors import PushRejected, RejectReason

__all__ = [
    "PushCipher",
    "decode_aes_key",
    "push_signature",
    "signature_matches",
]

_BLOCK_BITS = 256  # WeChat pads to 32 bytes, not AES's 16
_RANDOM_LEN = 16
_LEN_LEN = 4


def push_signature(token: str, *parts: str) -> str:
    """sha1 hex of the sorted concatenation of ``token`` and ``parts`` (timestamp, nonce, ...)."""
    joined = "".join(sorted((token, *parts)))
    return hashlib.sha1(joined.encode(), usedforsecurity=False).hexdigest()


def signature_matches(given: str, token: str, *parts: str) -> bool:
    """Constant-time check of a received signature."""
    expected = push_signature(token, *parts)
    return hmac.compare_digest(given.lower().encode(), expected.encode())


def decode_aes_key(encoding_aes_key: str) -> bytes:
    """The 32-byte key from a 43-char EncodingAESKey; ValueError (no key text) if malformed."""
    if len(encoding_aes_key) != 43:
        raise ValueError("EncodingAESKey must be 43 characters")
    try:
        key = base64.b64decode(encoding_aes_key + "=", validate=True)
    except binascii.Error:
        raise ValueError("EncodingAESKey is not base64") from None
    if len(key) != 32:
        raise ValueError("EncodingAESKey must decode to 32 bytes")
    return key


class PushCipher:
    """Encrypts and decrypts the safe-mode ``Encrypt`` field with one mini program's key."""

    __slots__ = ("_key",)

    def __init__(self, encoding_aes_key: str) -> None:
        self._key = decode_aes_key(encoding_aes_key)

    def __repr__(self) -> str:
        return "PushCipher(key='***')"

    def _cipher(self) -> Cipher[modes.CBC]:
        return Cipher(algorithms.AES(self._key), modes.CBC(self._key[:16]))

    def encrypt(self, message: bytes, appid: str, random16: bytes | None = None) -> str:
        """Base64 ciphertext of ``message`` for ``appid`` (``random16`` fixed only in tests)."""
        rand = os.urandom(_RANDOM_LEN) if random16 is None else random16
        if len(rand) != _RANDOM_LEN:
            raise ValueError("random16 must be 16 bytes")
        plain = rand + struct.pack(">I", len(message)) + message + appid.encode()
        padder = padding.PKCS7(_BLOCK_BITS).padder()
        padded = padder.update(plain) + padder.finalize()
        enc = self._cipher().encryptor()
        return base64.b64encode(enc.update(padded) + enc.finalize()).decode("ascii")

    def decrypt(self, encrypted: str) -> tuple[bytes, str]:
        """``(message, appid)`` from a base64 ``Encrypt`` value, or PushRejected."""
        raw = _b64(encrypted)
        if not raw or len(raw) % 32:
            raise PushRejected(
                RejectReason.BAD_CIPHERTEXT, "ciphertext is not a whole number of blocks"
            )
        dec = self._cipher().decryptor()
        padded = dec.update(raw) + dec.finalize()
        unpadder = padding.PKCS7(_BLOCK_BITS).unpadder()
        try:
            plain = unpadder.update(padded) + unpadder.finalize()
        except ValueError:
            raise PushRejected(RejectReason.BAD_CIPHERTEXT, "bad padding") from None
        return _split(plain)


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise PushRejected(RejectReason.BAD_CIPHERTEXT, "Encrypt is not base64") from None


def _split(plain: bytes) -> tuple[bytes, str]:
    head = _RANDOM_LEN + _LEN_LEN
    if len(plain) < head:
        raise PushRejected(RejectReason.BAD_CIPHERTEXT, "plaintext too short")
    (length,) = struct.unpack(">I", plain[_RANDOM_LEN:head])
    if head + length > len(plain):
        raise PushRejected(RejectReason.BAD_CIPHERTEXT, "declared length exceeds plaintext")
    message = plain[head : head + length]
    try:
        appid = plain[head + length :].decode("ascii")
    except UnicodeDecodeError:
        raise PushRejected(RejectReason.BAD_CIPHERTEXT, "appid is not ASCII") from None
    return message, appid
