"""A second, deliberately plain implementation of SPEC.md, used only to make vectors.

It imports nothing from ``e2e``: it is written from SPEC.md alone (sections named in the
comments), with ``cryptography`` for HKDF/HMAC/AES/ML-KEM, the standard library's ``hashlib``
for SHAKE256 (another implementation than the package's), ``nacl`` for X25519, ``cbor2`` for
encoding and Python integers for XEdDSA. It favours being obviously like the text over speed
or input checking; it is not part of the package.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from typing import Any

import cbor2
import nacl.bindings
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric import mlkem
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

# --- §0 notation ---------------------------------------------------------------------------


class DRng:
    """RNG(n): the next n bytes of SHA-256(seed | u64(counter)) blocks (SPEC §11)."""

    def __init__(self, seed: bytes) -> None:
        self.seed, self.counter, self.buf = seed, 0, b""

    def __call__(self, n: int) -> bytes:
        while len(self.buf) < n:
            self.buf += hashlib.sha256(self.seed + self.counter.to_bytes(8, "big")).digest()
            self.counter += 1
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


def hkdf(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    return HKDF(hashes.SHA256(), length, salt, info).derive(ikm)


def hmac256(key: bytes, msg: bytes) -> bytes:
    h = hmac.HMAC(key, hashes.SHA256())
    h.update(msg)
    return h.finalize()


def shake256(data: bytes, length: int) -> bytes:
    return hashlib.shake_256(data).digest(length)


def x25519_public(priv: bytes) -> bytes:
    return nacl.bindings.crypto_scalarmult_base(priv)


def dh(priv: bytes, pub: bytes) -> bytes:
    out = nacl.bindings.crypto_scalarmult(priv, pub)
    assert out != bytes(32)
    return out


def u32(n: int) -> bytes:
    return struct.pack(">I", n)


# --- §1 suites -----------------------------------------------------------------------------

SUITES: dict[int, dict[str, Any]] = {
    3: dict(pq=True, he=True, agree=b"E2E_PQXDH_X25519_SHA-256_ML-KEM-1024",
            root=b"E2E_RootStep", chain=b"E2E_ChainStep", tag=16),
}  # fmt: skip
HEADER_LABEL = b"E2E_HeaderKey"
MAX_SKIP = {3: 1000}  # §7: MAX_SKIP
MAX_SKIPPED_AGE = 2000  # §7

# --- §2 keys, XEdDSA, signed bytes --------------------------------------------------------


def encode_ec(pk: bytes) -> bytes:
    return b"\x05" + pk


def encode_kem(pk: bytes) -> bytes:
    return b"\x0a" + pk


P = 2**255 - 19
Q = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, -1, P) % P


def _recover_x(y: int, sign: int) -> int:
    xx = (y * y - 1) * pow(D * y * y + 1, -1, P) % P
    x = pow(xx, (P + 3) // 8, P)
    if (x * x - xx) % P:
        x = x * pow(2, (P - 1) // 4, P) % P
    if x & 1 != sign:
        x = P - x
    return x


_BY = 4 * pow(5, -1, P) % P
_B = (_recover_x(_BY, 0), _BY, 1, _recover_x(_BY, 0) * _BY % P)


def _add(p1: tuple[int, ...], p2: tuple[int, ...]) -> tuple[int, ...]:
    x1, y1, z1, t1 = p1
    x2, y2, z2, t2 = p2
    a, b = (y1 - x1) * (y2 - x2) % P, (y1 + x1) * (y2 + x2) % P
    c, dd = 2 * t1 * t2 * D % P, 2 * z1 * z2 % P
    e, f, g, h = b - a, dd - c, dd + c, b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _mul(n: int, pt: tuple[int, ...]) -> tuple[int, ...]:
    acc: tuple[int, ...] = (0, 1, 1, 0)
    while n:
        if n & 1:
            acc = _add(acc, pt)
        pt, n = _add(pt, pt), n >> 1
    return acc


def _enc(pt: tuple[int, ...]) -> tuple[bytes, int]:
    x, y, z, _ = pt
    zi = pow(z, -1, P)
    x, y = x * zi % P, y * zi % P
    return (y | (x & 1) << 255).to_bytes(32, "little"), x & 1


def _h(*parts: bytes) -> int:
    return int.from_bytes(hashlib.sha512(b"".join(parts)).digest(), "little") % Q


def xeddsa_sign(k_bytes: bytes, msg: bytes, z: bytes) -> bytes:
    """SPEC §2.2 Sign."""
    k = int.from_bytes(k_bytes, "little")
    k = (k & ~7 & ~(1 << 255)) | (1 << 254)
    _, sign = _enc(_mul(k, _B))
    a = (-k) % Q if sign else k % Q
    big_a, _ = _enc(_mul(a, _B))
    r = _h((2**256 - 2).to_bytes(32, "little"), a.to_bytes(32, "little"), msg, z)
    big_r, _ = _enc(_mul(r, _B))
    s = (r + _h(big_r, big_a, msg) * a) % Q
    return big_r + s.to_bytes(32, "little")


def spk_signed_bytes(suite: int, spk: bytes) -> bytes:
    return b"E2E_PQXDH_v1" + bytes([suite]) + encode_ec(spk)


def kem_signed_bytes(suite: int, kem_pk: bytes) -> bytes:
    return b"E2E_PQXDH_v1" + bytes([suite]) + encode_kem(kem_pk)


# --- §5.1 CBOR ---------------------------------------------------------------------------


def cbor_map(fields: dict[int, int | bytes]) -> bytes:
    return cbor2.dumps(dict(sorted(fields.items())))


def bundle_bytes(suite: int, ik: bytes, spk_id: int, spk: bytes, spk_sig: bytes,
                 opk_id: int | None, opk: bytes | None, kem_id: int | None,
                 kem_pk: bytes | None, kem_sig: bytes | None) -> bytes:  # fmt: skip
    """SPEC §2.4."""
    f: dict[int, int | bytes] = {0: 1, 1: suite, 2: 3, 3: ik, 5: spk_id, 11: spk, 12: spk_sig}
    if opk is not None and opk_id is not None:
        f[6], f[13] = opk_id, opk
    if kem_pk is not None and kem_id is not None and kem_sig is not None:
        f[7], f[14], f[15] = kem_id, kem_pk, kem_sig
    return cbor_map(f)


# --- §3 agreement --------------------------------------------------------------------------


def agreement(suite: int, dhs: bytes, ss: bytes | None, binding: bytes) -> tuple[bytes, ...]:
    s = SUITES[suite]
    assert ss is not None
    okm = hkdf(bytes(32), b"\xff" * 32 + dhs + ss, s["agree"] + binding, 96)
    return okm[:32], okm[32:64], okm[64:]


def pq_binding(ik_a: bytes, ik_b: bytes, spk: bytes, kem_pk: bytes, ct: bytes) -> bytes:
    return encode_ec(ik_a) + encode_ec(ik_b) + encode_ec(spk) + encode_kem(kem_pk) + ct


# --- §4 ratchet KDFs and AEADs --------------------------------------------------------------


def kdf_rk(suite: int, rk: bytes, dh_out: bytes) -> tuple[bytes, bytes, bytes]:
    """§4.1: SHAKE256(label | RK | dh_out, 96) -> RK', CK, NHK."""
    okm = shake256(SUITES[suite]["root"] + rk + dh_out, 96)
    return okm[:32], okm[32:64], okm[64:96]


def kdf_ck(suite: int, ck: bytes) -> tuple[bytes, bytes]:
    """§4.2: SHAKE256(label | CK, 96) -> (CK', MK = EK | MC)."""
    okm = shake256(SUITES[suite]["chain"] + ck, 96)
    return okm[:32], okm[32:96]


def seal_body(mk: bytes, nonce: bytes, ad: bytes, pt: bytes) -> bytes:
    """§4.3: AES-256-GCM(EK, nonce, pt, ad), EK = MK[0:32]."""
    assert len(mk) == 64 and len(nonce) == 12
    return AESGCM(mk[:32]).encrypt(nonce, pt, ad)


def open_body(mk: bytes, mc: bytes, nonce: bytes, ad: bytes, body: bytes) -> bytes:
    assert mk[32:] == mc  # §4.3: the header's MC must be the key's
    return AESGCM(mk[:32]).decrypt(nonce, body, ad)


def body_len(suite: int, n: int) -> int:
    return n + 16


def header_keys(hk: bytes) -> bytes:
    """§4.4: EKh = HMAC-SHA256("E2E_HeaderKey", HK | 0x01)."""
    return hmac256(HEADER_LABEL, hk + b"\x01")


def header_commitment(hk: bytes, nonce: bytes) -> bytes:
    """§4.4: Ch = HMAC-SHA256("E2E_HeaderKey", HK | 0x02 | nonce)."""
    return hmac256(HEADER_LABEL, hk + b"\x02" + nonce)


def seal_header(hk: bytes, nonce: bytes, header: bytes, ad: bytes) -> bytes:
    """§4.4: nonce | Ch | GCM(EKh, nonce, header, AD)."""
    return nonce + header_commitment(hk, nonce) + AESGCM(header_keys(hk)).encrypt(nonce, header, ad)


def open_header(hk: bytes | None, hdr: bytes, ad: bytes) -> bytes | None:
    if hk is None:
        return None
    if hdr[12:44] != header_commitment(hk, hdr[:12]):
        return None
    try:
        return AESGCM(header_keys(hk)).decrypt(hdr[:12], hdr[44:], ad)
    except Exception:
        return None


# --- §4.5 / §5.2 the ratchet and its frames --------------------------------------------------


class Party:
    """One end's Double Ratchet state, exactly the variables SPEC §4.5 names."""

    def __init__(self, suite: int, ad: bytes, rng: Callable[[int], bytes]) -> None:
        self.suite, self.AD, self.rng = suite, ad, rng
        self.DHs: tuple[bytes, bytes] = (b"", b"")
        self.DHr: bytes | None = None
        self.RK = b""
        self.CKs: bytes | None = None
        self.CKr: bytes | None = None
        self.Ns = self.Nr = self.PN = 0
        self.HKs: bytes | None = None
        self.HKr: bytes | None = None
        self.NHKs: bytes | None = None
        self.NHKr: bytes | None = None
        self.SKIPPED: dict[tuple[bytes, int], bytes] = {}
        self.OLD: list[tuple[bytes, bytes | None]] = []
        self.prekey: dict[int, int | bytes] | None = None

    def keypair(self) -> tuple[bytes, bytes]:
        priv = self.rng(32)
        return priv, x25519_public(priv)

    @classmethod
    def alice(cls, suite: int, ad: bytes, sk: tuple[bytes, ...], spk_b: bytes,
              rng: Callable[[int], bytes]) -> Party:  # fmt: skip
        a = cls(suite, ad, rng)
        a.DHs = a.keypair()
        a.DHr = spk_b
        a.RK, a.CKs, a.NHKs = kdf_rk(suite, sk[0], dh(a.DHs[0], spk_b))
        a.HKs, a.NHKr = sk[1], sk[2]
        return a

    @classmethod
    def bob(cls, suite: int, ad: bytes, sk: tuple[bytes, ...], spk_pair: tuple[bytes, bytes],
            rng: Callable[[int], bytes]) -> Party:  # fmt: skip
        b = cls(suite, ad, rng)
        b.DHs, b.RK = spk_pair, sk[0]
        b.NHKs, b.NHKr = sk[2], sk[1]
        return b

    def encrypt(self, pt: bytes) -> bytes:
        assert self.CKs is not None
        self.CKs, mk = kdf_ck(self.suite, self.CKs)
        header = self.DHs[1] + u32(self.PN) + u32(self.Ns) + mk[32:]  # §4.4: with MC
        fields: dict[int, int | bytes] = {0: 1, 1: self.suite, 2: 1 if self.prekey is None else 2}
        fields.update(self.prekey or {})
        n = body_len(self.suite, len(pt))
        fields[10] = bytes(n)
        self.Ns += 1
        # §4.5, §5.2: nonce = RNG(12); body under the blanked prefix, then the header over
        # AD | blanked prefix | body, both with that nonce.
        assert self.HKs is not None
        nonce = self.rng(12)
        fields[9] = bytes(132)
        blank = cbor_map(fields)[:-n]
        body = seal_body(mk, nonce, self.AD + blank, pt)
        fields[9] = seal_header(self.HKs, nonce, header, self.AD + blank + body)
        return cbor_map(fields)[:-n] + body

    def decrypt(self, frame: bytes) -> bytes:
        """Raises on failure; the vector generator only calls it on valid frames."""
        f = cbor2.loads(frame)
        assert cbor_map(f) == frame
        hdr, body = f[9], f[10]
        prefix = cbor_map({**f, 9: bytes(132)})[: len(frame) - len(body)]  # §5.2 blanked
        chain = None
        for key, name in [(self.HKr, "cur"), (self.NHKr, "next")] + [
            (k, "old") for _, k in reversed(self.OLD)
        ]:
            plain = open_header(key, hdr, self.AD + prefix + body)
            if plain is not None:
                chain = name
                break
        assert chain is not None and plain is not None
        dh_pub, pn, n = plain[:32], struct.unpack(">I", plain[32:36])[0], struct.unpack(
            ">I", plain[36:40])[0]  # fmt: skip
        mc, nonce = plain[40:72], hdr[:12]
        if (dh_pub, n) in self.SKIPPED:
            pt = open_body(self.SKIPPED[(dh_pub, n)], mc, nonce, self.AD + prefix, body)
            del self.SKIPPED[(dh_pub, n)]
            self.prekey = None
            return pt
        if dh_pub != self.DHr or self.CKr is None:
            budget = MAX_SKIP[self.suite]
            assert n <= budget
            self._skip(min(pn, self.Nr + budget - n))  # §4.5 step 5: the frame's budget
            if self.DHr is not None and self.CKr is not None:
                self.OLD.append((self.DHr, self.HKr))
            self.PN, self.Ns, self.Nr = self.Ns, 0, 0
            self.HKs, self.HKr = self.NHKs, self.NHKr
            self.DHr = dh_pub
            self.RK, self.CKr, self.NHKr = kdf_rk(self.suite, self.RK, dh(self.DHs[0], dh_pub))
            self.DHs = self.keypair()
            self.RK, self.CKs, self.NHKs = kdf_rk(self.suite, self.RK, dh(self.DHs[0], dh_pub))
        assert n - self.Nr <= MAX_SKIP[self.suite]
        self._skip(n)
        assert self.CKr is not None
        self.CKr, mk = kdf_ck(self.suite, self.CKr)
        self.Nr += 1
        pt = open_body(mk, mc, nonce, self.AD + prefix, body)
        while len(self.OLD) >= 5:
            old_dh, _ = self.OLD.pop(0)
            for k in [k for k in self.SKIPPED if k[0] == old_dh]:
                del self.SKIPPED[k]
        for k in [k for k in self.SKIPPED if k[0] == self.DHr and k[1] + MAX_SKIPPED_AGE < self.Nr]:
            del self.SKIPPED[k]  # §4.6 age
        while len(self.SKIPPED) > 2000:
            del self.SKIPPED[next(iter(self.SKIPPED))]
        self.prekey = None
        return pt

    def _skip(self, until: int) -> None:
        if self.CKr is None:
            return
        assert self.DHr is not None
        while self.Nr < until:
            self.CKr, mk = kdf_ck(self.suite, self.CKr)
            self.SKIPPED[(self.DHr, self.Nr)] = mk
            self.Nr += 1


def kem_pair_from_seed(seed: bytes) -> tuple[Any, bytes]:
    k = mlkem.MLKEM1024PrivateKey.from_seed_bytes(seed)
    return k, k.public_key().public_bytes_raw()


# --- §16 attachments ----------------------------------------------------------------------

ATT_CHUNK = 262144  # §16.3: 256 KiB


def att_padded(n: int) -> int:
    """§16.2: Padmé with a floor of 512."""
    length = n if n > 512 else 512
    e = 0
    while (1 << (e + 1)) <= length:  # E = floor(log2 L')
        e += 1
    s = 0
    while (1 << (s + 1)) <= e:  # floor(log2 E)
        s += 1
    s += 1
    mask = (1 << (e - s)) - 1
    return (length + mask) & ~mask


def att_keys(key: bytes, salt: bytes) -> tuple[bytes, bytes]:
    """§16.1: (EK, C) = HKDF-Expand-SHA512(K, "E2E_Attachment" | R, 64)."""
    s = HKDFExpand(hashes.SHA512(), 64, b"E2E_Attachment" + salt).derive(key)
    return s[:32], s[32:]


def att_header(key: bytes, salt: bytes) -> tuple[bytes, bytes]:
    """§16.1: (header, EK)."""
    ek, commit = att_keys(key, salt)
    return b"\x01" + salt + commit, ek


def att_nonce(i: int, last: bool) -> bytes:
    return struct.pack(">QI", i, 1 if last else 0)


def att_chunks(padded_plain: bytes) -> list[bytes]:
    return [padded_plain[i : i + ATT_CHUNK] for i in range(0, len(padded_plain), ATT_CHUNK)]


def att_seal(
    key: bytes, salt: bytes, plain: bytes, padding: bytes | None = None
) -> tuple[bytes, bytes]:
    """§16.1-§16.4: (blob, digest). ``padding`` replaces the zero padding (to make a blob that
    a receiver must refuse)."""
    header, ek = att_header(key, salt)
    pad_len = att_padded(len(plain)) - len(plain)
    pad = bytes(pad_len) if padding is None else padding
    assert len(pad) == pad_len
    chunks = att_chunks(plain + pad)
    sealed = [AESGCM(ek).encrypt(att_nonce(i, i == len(chunks) - 1), p, header)
              for i, p in enumerate(chunks)]  # fmt: skip
    d = hashlib.sha256(b"E2E_AttachmentDigest" + header).digest()
    for c in sealed:
        d = hashlib.sha256(d + c).digest()
    return header + b"".join(sealed), d


def att_blob_size(n: int) -> int:
    p = att_padded(n)
    return 49 + p + 16 * -(-p // ATT_CHUNK)


def att_open(key: bytes, digest: bytes, size: int, blob: bytes) -> tuple[bytes, str | None]:
    """§16.6, reading the blob in order: (plaintext released, error class or None)."""
    released = b""
    expected = att_blob_size(size)
    if len(blob) < 49:
        return released, "AttachmentTruncated"
    header = blob[:49]
    if header[0] != 1:
        return released, "UnsupportedVersion"
    ek, commit = att_keys(key, header[1:17])
    if commit != header[17:]:
        return released, "AttachmentKeyMismatch"
    padded = att_padded(size)
    n = -(-padded // ATT_CHUNK)
    d = hashlib.sha256(b"E2E_AttachmentDigest" + header).digest()
    pos, final = 49, b""
    for i in range(n):
        plain_len = min(ATT_CHUNK, padded - i * ATT_CHUNK)
        c = blob[pos : pos + plain_len + 16]
        if len(c) < plain_len + 16:
            break  # truncated: step 4
        try:
            p = AESGCM(ek).decrypt(att_nonce(i, i == n - 1), c, header)
        except Exception:
            return released, "ChunkTampered"
        keep = max(0, min(ATT_CHUNK, size - i * ATT_CHUNK))
        if p[keep:] != bytes(plain_len - keep):
            return released, "AttachmentError"
        d = hashlib.sha256(d + c).digest()
        pos += len(c)
        if i < n - 1:
            released += p[:keep]
        else:
            final = p[:keep]
    if len(blob) > expected:
        return released, "AttachmentExtended"
    if len(blob) < expected:
        return released, "AttachmentTruncated"
    if d != digest:
        return released, "DigestMismatch"
    return released + final, None


def att_pointer(blob_id: bytes, key: bytes, digest: bytes, size: int, content_type: str,
                file_name: str, thumbnail: bytes | None = None,
                caption: str | None = None) -> bytes:  # fmt: skip
    """§16.5."""
    fields: dict[int, int | bytes] = {0: 1, 1: blob_id, 2: key, 3: digest, 4: size,
                                      5: content_type.encode(), 6: file_name.encode()}  # fmt: skip
    if thumbnail is not None:
        fields[7] = thumbnail
    if caption is not None:
        fields[8] = caption.encode()
    return cbor_map(fields)
