"""push_crypto against an independent implementation (tests/gateway/wechat_sim.py)."""

from __future__ import annotations

import base64
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.gateway.wechat_sim import aes_decrypt, aes_encrypt, sha1_signature
from wxsub.errors import PushRejected
from wxsub.wechat.push_crypto import PushCipher, decode_aes_key, push_signature, signature_matches

KEY = base64.b64encode(bytes(range(32))).decode()[:-1]  # 43 chars, as WeChat shows it
APPID = "wx1234567890abcdef"


def test_key_decodes_to_32_bytes() -> None:
    assert decode_aes_key(KEY) == bytes(range(32))
    for bad in ("", KEY[:-1], KEY[:-1] + "!"):
        with pytest.raises(ValueError) as info:
            decode_aes_key(bad)
        assert bad[:10] not in str(info.value) or not bad


def test_signature_matches_wechat_rule() -> None:
    # sha1 of the lexicographically sorted concatenation
    assert push_signature("tok", "1700000000", "nonce1") == sha1_signature(
        "tok", "1700000000", "nonce1"
    )
    sig = push_signature("tok", "1", "n", "ENC")
    assert signature_matches(sig, "tok", "1", "n", "ENC")
    assert signature_matches(sig.upper(), "tok", "1", "n", "ENC")
    assert not signature_matches(sig, "tok2", "1", "n", "ENC")
    assert not signature_matches("", "tok", "1", "n", "ENC")


def test_known_vector_matches_independent_encryption() -> None:
    rand = b"r" * 16
    ours = PushCipher(KEY).encrypt(b"<xml>hello</xml>", APPID, random16=rand)
    assert ours == aes_encrypt(KEY, b"<xml>hello</xml>", APPID, rand)
    raw = base64.b64decode(ours)
    assert len(raw) % 32 == 0  # padded to 32-byte blocks, not 16


@settings(max_examples=200, deadline=None)
@given(message=st.binary(max_size=300), appid=st.from_regex(r"wx[0-9a-f]{16}", fullmatch=True))
def test_roundtrip_both_ways(message: bytes, appid: str) -> None:
    cipher = PushCipher(KEY)
    rand = os.urandom(16)
    assert aes_decrypt(KEY, cipher.encrypt(message, appid, rand)) == (message, appid)
    assert cipher.decrypt(aes_encrypt(KEY, message, appid, rand)) == (message, appid)


def test_padding_exactly_one_block_when_aligned() -> None:
    # 16 + 4 + 12 = 32 bytes of plaintext: PKCS#7 adds a whole 32-byte block of 0x20
    raw = base64.b64decode(PushCipher(KEY).encrypt(b"x" * 12, "", random16=b"\0" * 16))
    assert len(raw) == 64


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda raw: raw[:-16], id="truncated-half-block"),
        pytest.param(lambda raw: raw[:-32], id="truncated-whole-block"),
        pytest.param(lambda raw: raw[:-1], id="truncated-byte"),
        pytest.param(lambda raw: b"", id="empty"),
        pytest.param(lambda raw: raw[:-32] + bytes(32), id="garbage-last-block"),
    ],
)
def test_bad_ciphertext_rejected(mangle: object) -> None:
    good = base64.b64decode(aes_encrypt(KEY, b"<xml/>", APPID, b"\0" * 16))
    bad = base64.b64encode(mangle(good)).decode()  # type: ignore[operator]
    with pytest.raises(PushRejected) as info:
        PushCipher(KEY).decrypt(bad)
    assert info.value.reason == "bad_ciphertext"


def test_wrong_padding_value_rejected() -> None:
    """Padding bytes that disagree (or exceed 32) are refused, not silently trimmed."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    key = decode_aes_key(KEY)
    for pad in (bytes([33]) * 8, bytes([0]) * 8, bytes([5]) * 7 + bytes([8])):
        plain = b"\0" * 16 + (4).to_bytes(4, "big") + b"abcd" + pad
        enc = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
        blob = base64.b64encode(enc.update(plain) + enc.finalize()).decode()
        with pytest.raises(PushRejected) as info:
            PushCipher(KEY).decrypt(blob)
        assert info.value.reason == "bad_ciphertext"


def test_declared_length_beyond_plaintext_rejected() -> None:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    key = decode_aes_key(KEY)
    plain = b"\0" * 16 + (1000).to_bytes(4, "big") + b"abcdefghijkl"  # 32 bytes
    plain += bytes([32]) * 32
    enc = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    blob = base64.b64encode(enc.update(plain) + enc.finalize()).decode()
    with pytest.raises(PushRejected):
        PushCipher(KEY).decrypt(blob)


def test_not_base64_rejected_and_repr_masks_key() -> None:
    with pytest.raises(PushRejected):
        PushCipher(KEY).decrypt("not base64 !!")
    assert KEY not in repr(PushCipher(KEY))
