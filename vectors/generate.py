"""Regenerate the protocol's own vectors from vectors/reference.py (SPEC.md §11).

    python vectors/generate.py [OUT_DIR] [--only attachment.json ...]

All randomness comes from ``DRng(seed)`` with the seeds written into each case, except ML-KEM
encapsulation, which ``cryptography`` cannot run with fixed randomness: its (SS, CT) are
recorded in the case. Running this again therefore changes only the KEM values (and what
depends on them); the package must verify any output of this script.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import cbor2
from cryptography.hazmat.primitives.asymmetric import mlkem

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference as ref  # noqa: E402

SOURCE = (
    "vectors/generate.py from vectors/reference.py, an implementation of SPEC.md that shares "
    "no code with the e2e package; seeds in each case"
)


def h(b: bytes | None) -> str | None:
    return None if b is None else b.hex()


def write(out: Path, name: str, concept: str, cases: list[dict[str, Any]]) -> None:
    doc = {"concept": concept, "source": SOURCE, "cases": cases}
    (out / name).write_text(json.dumps(doc, indent=1) + "\n")
    print(f"{name}: {len(cases)} cases")


# --- kdf.json ------------------------------------------------------------------------------


def kdf_cases() -> list[dict[str, Any]]:
    rng = ref.DRng(b"kdf")
    cases: list[dict[str, Any]] = []
    for suite in (3,):
        for i in range(3):
            rk, dh_out = rng(32), rng(32)
            rk2, ck, nhk = ref.kdf_rk(suite, rk, dh_out)
            cases.append({"name": f"root_step/s{suite}/{i}", "kind": "root_step", "suite": suite,
                          "rk": h(rk), "dh": h(dh_out), "next_rk": h(rk2), "ck": h(ck),
                          "nhk": h(nhk)})  # fmt: skip
    ck = rng(32)
    for i in range(5):
        nxt, mk = ref.kdf_ck(3, ck)
        cases.append({"name": f"chain_step/s3/{i}", "kind": "chain_step", "suite": 3,
                      "ck": h(ck), "next_ck": h(nxt), "mk": h(mk)})  # fmt: skip
        ck = nxt
    for n in (0, 1, 15, 16, 33, 300):
        mk, ad, pt = rng(64), rng(66 + n % 7), rng(n)
        nonce = rng(12)
        cases.append({"name": f"body/{n}", "kind": "body", "mk": h(mk), "ad": h(ad),
                      "plaintext": h(pt), "nonce": h(nonce),
                      "body": h(ref.seal_body(mk, nonce, ad, pt))})  # fmt: skip
    for i in range(3):
        hk, nonce, ad = rng(32), rng(12), rng(66)
        header = rng(32) + ref.u32(i) + ref.u32(7 * i) + rng(32)
        cases.append({"name": f"header/{i}", "kind": "header", "hk": h(hk), "nonce": h(nonce),
                      "ad": h(ad), "header": h(header),
                      "sealed": h(ref.seal_header(hk, nonce, header, ad))})  # fmt: skip
    for suite in (3,):
        for n_dh in (3, 4):
            dhs = rng(32 * n_dh)
            ss = rng(32)
            binding = rng(1 + 33 * 3 + 1569 + 1568)
            out = ref.agreement(suite, dhs, ss, binding)
            cases.append({"name": f"agreement_kdf/s{suite}/{n_dh}dh", "kind": "agreement_kdf",
                          "suite": suite, "dhs": h(dhs), "ss": h(ss), "binding": h(binding),
                          "sk": h(out[0]), "hka": h(out[1]), "hkb": h(out[2])})  # fmt: skip
    return cases


# --- agreement.json and transcripts.json share the set-up -----------------------------------


def setup(suite: int, seed: bytes, with_opk: bool) -> dict[str, Any]:
    """Keys of both parties, Bob's bundle, and the agreement as SPEC §2-§3 compute it."""
    rng = ref.DRng(seed + b"/keys")
    ik_a, ik_b, spk, opk = rng(32), rng(32), rng(32), rng(32)
    kem_seed = rng(64)
    pub = ref.x25519_public
    spk_sig = ref.xeddsa_sign(ik_b, ref.spk_signed_bytes(suite, pub(spk)), rng(64))
    kem_pk = kem_sig = ss = ct = None
    if suite == 3:
        kem_priv, kem_pk = ref.kem_pair_from_seed(kem_seed)
        kem_sig = ref.xeddsa_sign(ik_b, ref.kem_signed_bytes(suite, kem_pk), rng(64))
        ss, ct = mlkem.MLKEM1024PublicKey.from_public_bytes(kem_pk).encapsulate()
        assert kem_priv.decapsulate(ct) == ss
    bundle = ref.bundle_bytes(
        suite, pub(ik_b), 7, pub(spk), spk_sig, 9 if with_opk else None,
        pub(opk) if with_opk else None, 11 if suite == 3 else None, kem_pk, kem_sig,
    )  # fmt: skip
    rng_a = ref.DRng(seed + b"/alice")
    ek = rng_a(32)
    dhs = dh1 = ref.dh(ik_a, pub(spk))
    dhs = dh1 + ref.dh(ek, pub(ik_b)) + ref.dh(ek, pub(spk))
    if with_opk:
        dhs += ref.dh(ek, pub(opk))
    binding = b""
    if suite == 3:
        assert kem_pk is not None and ct is not None
        binding = ref.pq_binding(pub(ik_a), pub(ik_b), pub(spk), kem_pk, ct)
    sk = ref.agreement(suite, dhs, ss, binding)
    ad = ref.encode_ec(pub(ik_a)) + ref.encode_ec(pub(ik_b))
    return {
        "suite": suite, "seed": seed.decode(), "ik_a": ik_a, "ik_b": ik_b, "spk": spk,
        "opk": opk if with_opk else None, "kem_seed": kem_seed if suite == 3 else None,
        "spk_id": 7, "opk_id": 9 if with_opk else None, "kem_id": 11 if suite == 3 else None,
        "bundle": bundle, "ek": ek, "ss": ss, "ct": ct, "sk": sk, "ad": ad, "rng_a": rng_a,
    }  # fmt: skip


def setup_json(s: dict[str, Any]) -> dict[str, Any]:
    keys = ("ik_a", "ik_b", "spk", "opk", "kem_seed", "bundle", "ss", "ct")
    out = {k: h(s[k]) for k in keys}
    out.update(suite=s["suite"], seed=s["seed"], spk_id=s["spk_id"], opk_id=s["opk_id"],
               kem_id=s["kem_id"])  # fmt: skip
    return out


def agreement_cases() -> list[dict[str, Any]]:
    cases = []
    for suite in (3,):
        for with_opk in (True, False):
            s = setup(suite, f"agreement/s{suite}/opk={with_opk}".encode(), with_opk)
            case = {"name": f"s{suite}/opk={with_opk}", "setup": setup_json(s),
                    "ek": h(s["ek"]), "sk": h(s["sk"][0]), "ad": h(s["ad"]),
                    "hka": h(s["sk"][1]) if suite == 3 else None,
                    "hkb": h(s["sk"][2]) if suite == 3 else None, "error": None,
                    "allowed": [suite]}  # fmt: skip
            cases.append(case)
    # Negative cases: the same set-up with one thing wrong, and the error SPEC §3 names.
    base = setup(3, b"agreement/negative", True)
    bundle = cbor2.loads(base["bundle"])

    def variant(name: str, error: str, allowed: list[int] | None = None, **change: Any) -> None:
        b = dict(bundle)
        for k, v in change.items():
            key = int(k[1:])
            if v is None:
                b.pop(key, None)
            else:
                b[key] = v
        sj = setup_json(base)
        sj["bundle"] = ref.cbor_map(b).hex()
        cases.append({"name": name, "setup": sj, "ek": h(base["ek"]), "error": error,
                      "allowed": allowed})  # fmt: skip

    sig = bytearray(bundle[12])
    sig[5] ^= 1
    variant("bad SPK signature", "InvalidSignature", k12=bytes(sig))
    ksig = bytearray(bundle[15])
    ksig[40] ^= 0x10
    variant("bad KEM prekey signature", "InvalidSignature", k15=bytes(ksig))
    low_order = bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")
    variant("low-order one-time prekey", "NonContributory", k13=low_order)
    variant("one-time prekey of 31 bytes", "DecodeError", k13=bundle[13][:31])
    variant("KEM prekey of wrong length", "DecodeError", k14=bundle[14][:-1])
    # Suite 1 (libsignal's schedule in these frames) is retired: unknown like any other id.
    variant("relabelled to retired suite 1 with KEM fields", "UnknownSuite", k1=1)
    variant("stripped to retired suite 1 (downgrade)", "UnknownSuite", k1=1, k7=None, k14=None,
            k15=None)  # fmt: skip
    # Suite 2 (the HMAC key schedule that suite 3 replaced) is retired too.
    variant("relabelled to retired suite 2", "UnknownSuite", k1=2)
    variant("bundle not allowed by the policy", "SuiteMismatch", allowed=[])
    variant("unknown suite", "UnknownSuite", k1=9)
    variant("frame version 2", "UnsupportedVersion", k0=2)
    return cases


# --- transcripts.json ----------------------------------------------------------------------

SCRIPT: list[tuple[Any, ...]] = [
    ("send", "a", "a0", b"Hello, I ordered a blue bike on Monday."),
    ("send", "a", "a1", b""),
    ("send", "a", "a2", b"Order number 8841-XQ."),
    ("recv", "b", "a1"),
    ("recv", "b", "a0"),
    ("replay", "b", "a0", "DuplicateMessage"),
    ("send", "b", "b0", b"Thanks! Let me check order 8841-XQ."),
    ("send", "b", "b1", b"It ships tomorrow." * 20),
    ("recv", "a", "b1"),
    ("tamper", "a", "b0", "AuthenticationFailed"),
    ("recv", "a", "b0"),
    ("send", "a", "a3", b"Great, thank you"),
    ("recv", "b", "a3"),
    ("recv", "b", "a2"),
    ("replay", "b", "a2", "DuplicateMessage"),
    ("send", "b", "b2", bytes(range(16))),
    ("send", "a", "a4", b"crossing message from Alice"),
    ("recv", "a", "b2"),
    ("recv", "b", "a4"),
    ("send", "a", "a5", b"x" * 300),
    ("recv", "b", "a5"),
    ("send", "b", "b3", b"bye"),
    ("recv", "a", "b3"),
]


def transcript_case(
    suite: int, with_opk: bool, script: list[tuple[Any, ...]], name: str
) -> dict[str, Any]:
    """One conversation of ``script`` between the reference's Alice and Bob: every frame sent,
    every plaintext received, and the error each replayed or tampered frame must raise."""
    s = setup(suite, f"transcript/{name}".encode(), with_opk)
    pub = ref.x25519_public
    alice = ref.Party.alice(suite, s["ad"], s["sk"], pub(s["spk"]), s["rng_a"])
    alice.prekey = {3: pub(s["ik_a"]), 4: pub(s["ek"]), 5: 7}
    if with_opk:
        alice.prekey[6] = 9
    alice.prekey[7], alice.prekey[8] = 11, s["ct"]
    bob = ref.Party.bob(suite, s["ad"], s["sk"], (s["spk"], pub(s["spk"])),
                        ref.DRng(f"transcript/{name}".encode() + b"/bob"))  # fmt: skip
    parties = {"a": alice, "b": bob}
    frames: dict[str, bytes] = {}
    events: list[dict[str, Any]] = []
    for op, who, label, *rest in script:
        if op == "send":
            frames[label] = parties[who].encrypt(rest[0])
            events.append({"op": "send", "party": who, "label": label,
                           "plaintext": h(rest[0]), "frame": h(frames[label])})  # fmt: skip
        elif op == "recv":
            pt = parties[who].decrypt(frames[label])
            events.append({"op": "recv", "party": who, "label": label, "plaintext": h(pt)})
        else:
            frame = frames[label]
            if op == "tamper":
                frame = frame[:-1] + bytes([frame[-1] ^ 1])
            events.append({"op": op, "party": who, "label": label, "frame": h(frame),
                           "error": rest[0]})  # fmt: skip
    return {"name": name, "setup": setup_json(s), "events": events}


def transcript_cases() -> list[dict[str, Any]]:
    return [
        transcript_case(3, with_opk, SCRIPT, f"s3/opk={with_opk}") for with_opk in (True, False)
    ]


# --- frames.json ---------------------------------------------------------------------------


def frame_cases() -> list[dict[str, Any]]:
    """Strict-decoding cases: raw bytes and the error SPEC §5.3 requires (None: accepted)."""
    good = {0: 1, 1: 3, 2: 1, 9: bytes(132), 10: bytes(16)}
    enc = ref.cbor_map
    cases: list[dict[str, Any]] = []

    def case(name: str, raw: bytes, error: str | None, pad: int = 0) -> None:
        c: dict[str, Any] = {"name": name, "raw": raw.hex(), "error": error}
        if pad:
            c["zero_pad"] = pad  # raw is followed by this many zero bytes
        cases.append(c)

    case("minimal suite-3 message frame", enc(good), None)
    case("retired suite-1 message frame", enc({**good, 1: 1, 9: bytes(40), 10: bytes(24)}),
         "UnknownSuite")  # fmt: skip
    case("retired suite-2 message frame", enc({**good, 1: 2, 9: bytes(100), 10: bytes(64)}),
         "UnknownSuite")  # fmt: skip
    case("empty input", b"", "DecodeError")
    case("not a map", cbor2.dumps([1, 2]), "DecodeError")
    case("extra key", enc({**good, 11: b"x"}), "DecodeError")
    case("missing body", enc({k: v for k, v in good.items() if k != 10}), "DecodeError")
    case("unsorted keys", cbor2.dumps({1: 3, 0: 1, 2: 1, 9: bytes(132), 10: bytes(16)}),
         "DecodeError")  # fmt: skip
    dup = bytearray(enc(good))
    dup[0] += 1
    case("duplicate key", bytes(dup) + b"\x00\x01", "DecodeError")
    nonshort = enc(good).replace(b"\x00\x01\x01\x03", b"\x00\x18\x01\x01\x03", 1)
    case("non-shortest integer", nonshort, "DecodeError")
    indef = b"\xbf" + enc(good)[1:] + b"\xff"
    case("indefinite-length map", indef, "DecodeError")
    case("text instead of bytes", cbor2.dumps({0: 1, 1: 3, 2: 1, 9: "x" * 132, 10: bytes(16)}),
         "DecodeError")  # fmt: skip
    case("negative integer", cbor2.dumps({0: 1, 1: 3, 2: -1, 9: bytes(132), 10: bytes(16)}),
         "DecodeError")  # fmt: skip
    case("float", cbor2.dumps({0: 1, 1: 3, 2: 1.0, 9: bytes(132), 10: bytes(16)}), "DecodeError")
    case("bool", cbor2.dumps({0: 1, 1: 3, 2: True, 9: bytes(132), 10: bytes(16)}), "DecodeError")
    case("tag", cbor2.dumps({0: 1, 1: 3, 2: 1, 9: cbor2.CBORTag(24, bytes(132)),
                             10: bytes(16)}), "DecodeError")  # fmt: skip
    case("header of 131 bytes", enc({**good, 9: bytes(131)}), "DecodeError")
    case("header of suite 2's 100 bytes", enc({**good, 9: bytes(100)}), "DecodeError")
    case("version 2", enc({**good, 0: 2}), "UnsupportedVersion")
    case("unknown suite 4", enc({**good, 1: 4}), "UnknownSuite")
    case("unknown type 9", enc({**good, 2: 9}), "DecodeError")
    case("message with prekey fields", enc({**good, 3: bytes(32)}), "DecodeError")
    case("prekey message without KEM in suite 3",
         enc({**good, 2: 2, 3: bytes(32), 4: bytes(32), 5: 1}), "DecodeError")  # fmt: skip
    case("nested 500 deep", b"\xa1\x00" + b"\x81" * 500 + b"\x00", "DecodeError")
    case("oversize", b"\xa5", "LimitExceeded", pad=278_528)
    case("truncated", enc(good)[:-1], "DecodeError")
    case("trailing byte", enc(good) + b"\x00", "DecodeError")
    return cases


# --- attachment.json -----------------------------------------------------------------------

_ATT_SEAL_SIZES = (0, 1, 100, 511, 512, 513, 4000, 262144, 262145, 600000)
_ATT_INLINE = 8192  # blobs up to this size are written out; larger ones as their SHA-256


def _att_sealed(seed: bytes, size: int) -> tuple[bytes, bytes, bytes, bytes, bytes]:
    """(key, salt, plaintext, blob, digest): key then salt from DRng(seed) (§16.1's order),
    the plaintext from DRng(seed | "/plaintext")."""
    rng = ref.DRng(seed)
    key, salt = rng(32), rng(16)
    plain = ref.DRng(seed + b"/plaintext")(size)
    blob, digest = ref.att_seal(key, salt, plain)
    return key, salt, plain, blob, digest


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def attachment_cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []
    sizes = [0, 1, 511, 512, 513, 1000, 1023, 1024, 1025, 2047, 2048, 4095, 65535, 65536,
             65537, 100000, 262144, 262145, 1 << 20, (1 << 20) + 1, 10**9, 2**32 - 1]  # fmt: skip
    pairs = [[n, ref.att_padded(n), ref.att_blob_size(n)] for n in sizes]
    cases.append({"name": "padding", "kind": "padding", "pairs": pairs})
    for size in _ATT_SEAL_SIZES:
        seed = b"attachment/seal/%d" % size
        key, salt, plain, blob, digest = _att_sealed(seed, size)
        case: dict[str, Any] = {"name": f"seal/{size}", "kind": "seal", "seed": seed.decode(),
                                "size": size, "key": h(key), "salt": h(salt),
                                "padded": ref.att_padded(size), "blob_size": len(blob),
                                "digest": h(digest), "blob_sha256": _sha(blob)}  # fmt: skip
        if len(blob) <= _ATT_INLINE:
            case["plaintext"], case["blob"] = h(plain), h(blob)
        cases.append(case)

    # Opening: a 3-chunk attachment, changed as each op says; the receiver reads the blob in
    # order (§16.6) and releases what the reference says, then fails with the named class.
    size, seed = 600000, b"attachment/open"
    key, salt, plain, blob, digest = _att_sealed(seed, size)
    sc = 262160
    c = [blob[49 + i * sc : 49 + (i + 1) * sc] for i in range(3)]
    _, _, _, other, _ = _att_sealed(b"attachment/other", size)
    rng = ref.DRng(b"attachment/other-same-key")  # salt, then plaintext
    same_key_blob, _ = ref.att_seal(key, rng(16), rng(size))
    assert len(same_key_blob) == len(blob)

    def flip(at: int) -> bytes:
        b = bytearray(blob)
        b[at] ^= 0x04
        return bytes(b)

    opens: list[tuple[str, bytes, dict[str, Any], list[dict[str, Any]]]] = [
        ("intact", blob, {}, []),
        ("bitflip/chunk1", flip(49 + sc + 1000), {}, [{"op": "flip", "at": 49 + sc + 1000}]),
        ("bitflip/tag0", flip(49 + sc - 1), {}, [{"op": "flip", "at": 49 + sc - 1}]),
        ("bitflip/final", flip(len(blob) - 30), {}, [{"op": "flip", "at": len(blob) - 30}]),
        ("bitflip/salt", flip(5), {}, [{"op": "flip", "at": 5}]),
        ("bitflip/commitment", flip(40), {}, [{"op": "flip", "at": 40}]),
        ("truncated/header", blob[:20], {}, [{"op": "truncate", "to": 20}]),
        ("truncated/after-header", blob[:49], {}, [{"op": "truncate", "to": 49}]),
        ("truncated/mid-final", blob[:-100], {}, [{"op": "truncate", "to": len(blob) - 100}]),
        ("truncated/drop-final", blob[: 49 + 2 * sc], {}, [{"op": "truncate", "to": 49 + 2 * sc}]),
        ("truncated/at-boundary-size-matching", blob[: 49 + 2 * sc], {"size": 524288},
         [{"op": "truncate", "to": 49 + 2 * sc}]),
        ("reordered/0-1", blob[:49] + c[1] + c[0] + c[2], {}, [{"op": "swap", "a": 0, "b": 1}]),
        ("duplicated/1", blob[:49] + c[0] + c[1] + c[1] + c[2], {}, [{"op": "dup", "chunk": 1}]),
        ("duplicated/0-for-1", blob[:49] + c[0] + c[0] + c[2], {},
         [{"op": "replace", "chunk": 1, "with": 0}]),
        ("extended/chunk", blob + c[2], {}, [{"op": "dup", "chunk": 2}]),
        ("extended/one-byte", blob + b"\x00", {}, [{"op": "append", "bytes": "00"}]),
        ("wrong-key", blob, {"key": h(bytes([key[0] ^ 1]) + key[1:])}, []),
        ("wrong-digest", blob, {"digest": h(digest[:-1] + bytes([digest[-1] ^ 1]))}, []),
        ("swapped-blob", other, {}, [{"op": "swap_blob", "seed": "attachment/other"}]),
        ("version-2", blob[:0] + b"\x02" + blob[1:], {}, [{"op": "set", "at": 0, "value": 2}]),
    ]
    for name, changed, override, ops in opens:
        k = bytes.fromhex(override.get("key", key.hex()))
        d = bytes.fromhex(override.get("digest", digest.hex()))
        n = override.get("size", size)
        released, error = ref.att_open(k, d, n, changed)
        cases.append({"name": f"open/{name}", "kind": "open", "seed": seed.decode(),
                      "size": size, "ops": ops, "key": h(k), "digest": h(d), "open_size": n,
                      "blob_sha256": _sha(changed), "error": error,
                      "released_len": len(released),
                      "released_sha256": _sha(released)})  # fmt: skip
    # A blob made by a holder of the key (another salt and plaintext, every chunk valid under
    # K): only the digest catches it. And one whose padding is not zero (a small one, inline).
    released, error = ref.att_open(key, digest, size, same_key_blob)
    assert error == "DigestMismatch"
    cases.append({"name": "open/other-blob-same-key", "kind": "open", "blob": None,
                  "blob_sha256": _sha(same_key_blob), "blob_from": "other-same-key",
                  "seed": seed.decode(), "size": size, "ops": [], "key": h(key),
                  "digest": h(digest), "open_size": size, "error": error,
                  "released_len": len(released), "released_sha256": _sha(released)})  # fmt: skip
    rng = ref.DRng(b"attachment/padding")
    pkey, psalt, pplain = rng(32), rng(16), rng(1000)
    for label, padding in (("zero", bytes(24)), ("nonzero", b"\x01" + bytes(23))):
        pblob, pdigest = ref.att_seal(pkey, psalt, pplain, padding)
        released, error = ref.att_open(pkey, pdigest, 1000, pblob)
        cases.append({"name": f"open/padding-{label}", "kind": "open", "blob": h(pblob),
                      "key": h(pkey), "digest": h(pdigest), "open_size": 1000, "ops": [],
                      "error": error, "released_len": len(released),
                      "released_sha256": _sha(released)})  # fmt: skip
    cases += _pointer_cases()
    return cases


def _pointer_cases() -> list[dict[str, Any]]:
    rng = ref.DRng(b"attachment/pointer")
    blob_id, key, digest = rng(16), rng(32), rng(32)
    thumb = rng(300)
    base = dict(blob_id=blob_id, key=key, digest=digest, size=123456,
                content_type="image/jpeg", file_name="parcel.jpg")  # fmt: skip
    cases: list[dict[str, Any]] = []

    def ok(name: str, **fields: Any) -> None:
        f = {**base, **fields}
        raw = ref.att_pointer(**f)
        cases.append({"name": f"pointer/{name}", "kind": "pointer", "result": "valid",
                      "fields": {k: (v.hex() if isinstance(v, bytes) else v)
                                 for k, v in f.items()}, "encoding": h(raw)})  # fmt: skip

    def bad(name: str, raw: bytes, error: str) -> None:
        stripped = raw.rstrip(b"\x00")
        pad = len(raw) - len(stripped) if len(raw) - len(stripped) > 1024 else 0
        c = {"name": f"pointer/{name}", "kind": "pointer", "result": "invalid",
             "encoding": h(raw[: len(raw) - pad]), "error": error}  # fmt: skip
        if pad:
            c["zero_pad"] = pad  # the encoding is followed by this many zero bytes
        cases.append(c)

    ok("minimal")
    ok("thumbnail and caption", thumbnail=thumb, caption="The box arrived crushed.\nSee photo.")
    ok("unicode name", file_name="Rechnung März №7 — 請求書.pdf", content_type="application/pdf")
    ok("largest size", size=2**32 - 1, content_type="video/mp4", file_name="v.mp4")
    ok("empty attachment", size=0, content_type="application/octet-stream", file_name="empty")
    ok("right-to-left caption", caption="\u202bשלום\u202c")
    good = {0: 1, 1: blob_id, 2: key, 3: digest, 4: 123456, 5: b"image/jpeg", 6: b"parcel.jpg"}

    def enc(fields: dict[int, Any]) -> bytes:
        return cbor2.dumps(fields)

    bad("version 2", enc({**good, 0: 2}), "UnsupportedVersion")
    bad("unknown key 9", enc({**good, 9: b"x"}), "DecodeError")
    bad("missing file name", enc({k: v for k, v in good.items() if k != 6}), "DecodeError")
    bad("blob id of 15 bytes", enc({**good, 1: blob_id[:15]}), "DecodeError")
    bad("key of 31 bytes", enc({**good, 2: key[:31]}), "DecodeError")
    bad("size over 2^32-1", enc({**good, 4: 2**32}), "DecodeError")
    bad("file name as a text string", enc({**good, 6: "parcel.jpg"}), "DecodeError")
    bad("path in file name", enc({**good, 6: b"../../.ssh/authorized_keys"}), "DecodeError")
    bad("backslash in file name", enc({**good, 6: b"..\\evil.exe"}), "DecodeError")
    bad("file name ..", enc({**good, 6: b".."}), "DecodeError")
    bad("empty file name", enc({**good, 6: b""}), "DecodeError")
    bad("NUL in file name", enc({**good, 6: b"a\x00.jpg"}), "DecodeError")
    bad("newline in file name", enc({**good, 6: b"a\n.jpg"}), "DecodeError")
    bad("right-to-left override in file name", enc({**good, 6: "invoice\u202efdp.exe".encode()}),
        "DecodeError")  # fmt: skip
    bad("file name of 256 bytes", enc({**good, 6: b"a" * 256}), "LimitExceeded")
    bad("invalid UTF-8 file name", enc({**good, 6: b"\xff.jpg"}), "DecodeError")
    bad("content type with parameters", enc({**good, 5: b"text/plain; charset=utf-8"}),
        "DecodeError")  # fmt: skip
    bad("content type without subtype", enc({**good, 5: b"image"}), "DecodeError")
    bad("empty thumbnail", enc({**good, 7: b""}), "DecodeError")
    bad("thumbnail of 65537 bytes", enc({**good, 7: bytes(65537)}), "LimitExceeded")
    bad("caption of 4097 bytes", enc({**good, 8: b"a" * 4097}), "LimitExceeded")
    bad("control character in caption", enc({**good, 8: b"a\x1b[2Jb"}), "DecodeError")
    unsorted = b"".join(cbor2.dumps(k) + cbor2.dumps(good[k]) for k in (1, 0, 2, 3, 4, 5, 6))
    bad("unsorted keys", b"\xa7" + unsorted, "DecodeError")
    bad("trailing byte", enc(good) + b"\x00", "DecodeError")
    bad("oversize", enc({**good, 7: bytes(73728)}), "LimitExceeded")
    return cases


def main() -> None:
    """``generate.py [OUT_DIR] [--only FILE ...]``: every file, or only the named ones."""
    args = sys.argv[1:]
    only = set(args[args.index("--only") + 1 :]) if "--only" in args else None
    args = args[: args.index("--only")] if "--only" in args else args
    out = Path(args[0]) if args else Path(__file__).resolve().parent
    files = [
        ("kdf.json", "kdf", kdf_cases),
        ("agreement.json", "agreement", agreement_cases),
        ("frames.json", "frame", frame_cases),
        ("transcripts.json", "transcript", transcript_cases),
        ("attachment.json", "attachment", attachment_cases),
    ]
    for name, concept, make in files:
        if only is None or name in only:
            write(out, name, concept, make())

if __name__ == "__main__":
    main()
