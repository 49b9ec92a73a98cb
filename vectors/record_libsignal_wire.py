"""Record vectors/libsignal_wire.json: real libsignal messages to an e2e responder.

Run from the repository root after ``cd tests/interop && npm ci``:
    python vectors/record_libsignal_wire.py > vectors/libsignal_wire.json

For each pinned libsignal version (and session version), libsignal processes a bundle e2e
made from keys derived from a fixed label, and a conversation follows: libsignal sends
PreKeySignalMessages, e2e answers, libsignal ratchets, with drops and reordering. Every
libsignal message is recorded with its plaintext; every e2e message is recorded after
libsignal accepted it. The verifier (e2e/vectors/libsignal_wire_vectors.py) replays it.

With 0.90.0, 0.92.2 and 0.103.0 both sides speak SPQR (e2e at its default minimum version
1) and the conversation runs through three SPQR epochs, every chunk stream with parity and
drops; with 0.72.1 (no SPQR) e2e runs at minimum version 0.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from interop.harness import Harness  # noqa: E402

from e2e import _testing  # noqa: E402
from e2e.keys import KeyPair  # noqa: E402
from e2e.libsignal import LibsignalPrekeys, SessionRecord  # noqa: E402
from e2e.vectors.libsignal_wire_vectors import ShakeRng  # noqa: E402

_testing.allow_injected_rng()  # the recorded keys come from fixed seeds (e2e/_testing.py)

CASES = [
    ("libsignal-072", 3),
    ("libsignal-072", 4),
    ("libsignal-090", 4),
    ("libsignal-092", 4),
    ("libsignal-103", 4),
]
#: Packages that speak SPQR (e2e then keeps its default minimum version 1).
SPQR = ("libsignal-090", "libsignal-092", "libsignal-103")
# (sender, number of messages, indexes delivered in this order; missing ones are dropped)
SCRIPT = [
    ("libsignal", 3, [0, 2, 1]),
    ("e2e", 2, [0, 1]),
    ("libsignal", 4, [0, 3, 1]),
    ("e2e", 3, [2, 0]),
    ("libsignal", 2, [1, 0]),
]


def _most(n: int, drop: tuple[int, ...] = (), swap: bool = True) -> list[int]:
    """Indexes 0..n-1 without ``drop``, the first kept one first, the last two swapped."""
    out = [i for i in range(n) if i not in drop]
    if swap and len(out) > 2:
        out[-1], out[-2] = out[-2], out[-1]
    return out


# SPQR epochs 1-3 (libsignal, the initiator, is epoch 1's key sender; roles swap each epoch).
SPQR_SCRIPT = [
    ("libsignal", 4, [0, 2, 1, 3]),  # header chunks (parity from 3)
    ("e2e", 3, [0, 1, 2]),  # e2e encapsulates: ct1 chunks 0-2
    ("libsignal", 40, _most(40, (5, 17, 30))),  # key vector, three chunks lost
    ("e2e", 30, _most(30, (4, 9))),  # ct1 3-32, two lost: libsignal decodes from parity
    ("libsignal", 2, [1, 0]),  # ek and ct1 acknowledged
    ("e2e", 7, _most(7, (0, 2))),  # ct2 with parity: libsignal completes epoch 1
    ("libsignal", 2, [0, 1]),  # epoch 2: e2e sends the key
    ("e2e", 5, _most(5, (1,))),
    ("libsignal", 3, [0, 1, 2]),
    ("e2e", 40, _most(40, (3, 20, 21))),
    ("libsignal", 32, _most(32, (7,))),
    ("e2e", 2, [0, 1]),
    ("libsignal", 7, _most(7, (3,))),  # e2e completes epoch 2
    ("e2e", 3, [0, 2, 1]),
    ("libsignal", 3, [0, 1, 2]),  # epoch 3 under way
]


def record(package: str, version: int) -> dict[str, object]:
    min_version = 1 if package in SPQR else 0
    label = f"e2e libsignal_wire vector {package} v{version}".encode()
    keyrng = ShakeRng(hashlib.sha256(label + b" keys").digest())
    rng_seed = hashlib.sha256(label + b" rng").digest()
    identity = KeyPair.generate(keyrng)
    keys = LibsignalPrekeys.generate(identity, 4242, one_time=1, kyber=version == 4, rng=keyrng)
    bundle = keys.bundle(kyber=version == 4)
    spk = keys.signed[bundle.signed_prekey_id]
    assert bundle.prekey_id is not None
    opk = keys.one_time[bundle.prekey_id]
    bob: dict[str, object] = {
        "identity_private": identity.private_bytes().hex(),
        "registration_id": keys.registration_id,
        "signed_prekey": {
            "id": spk.id,
            "private": spk.pair.private_bytes().hex(),
            "signature": spk.signature.hex(),
        },
        "prekey": {"id": opk.id, "private": opk.pair.private_bytes().hex()},
    }
    if version == 4:
        assert bundle.kyber_prekey_id is not None
        kem = keys.kem[bundle.kyber_prekey_id]
        bob["kyber_prekey"] = {
            "id": kem.id,
            "mlkem_seed": kem.pair.seed().hex(),
            "signature": kem.signature.hex(),
        }
    h = Harness(package)
    try:
        lib_version = h.call("version")["version"]
        alice = h.call("init", party="alice", registration_id=1111)["identity_key"]
        h.call("process_bundle", party="alice", peer="e2e", bundle=bundle.to_json())
        rng = ShakeRng(rng_seed)
        rec = SessionRecord()
        steps: list[dict[str, object]] = []
        n = 0
        for sender, count, order in SPQR_SCRIPT if package in SPQR else SCRIPT:
            texts = [
                f"{package} v{version} message {n + i} from {sender}".encode() for i in range(count)
            ]
            n += count
            if sender == "libsignal":
                msgs = h.encrypt("alice", "e2e", *texts)
                for i in order:
                    t, m = msgs[i]
                    out = rec.decrypt(
                        t,
                        m,
                        keys,
                        identity,
                        keys.registration_id,
                        rng=rng,
                        allowed_versions=(version,),
                        spqr_min_version=min_version,
                    )
                    assert out.plaintext == texts[i]
                    if out.prekeys_used is not None:
                        u = out.prekeys_used
                        keys.mark_used(u.prekey_id, u.kyber_prekey_id, u.base_key)
                    steps.append(
                        {
                            "from": "libsignal",
                            "type": t,
                            "message": m.hex(),
                            "plaintext": texts[i].hex(),
                        }
                    )
            else:
                msgs = [rec.encrypt(p, rng) for p in texts]
                for i, (t, m) in enumerate(msgs):
                    steps.append(
                        {"from": "e2e", "type": t, "message": m.hex(), "plaintext": texts[i].hex()}
                    )
                got = h.decrypt("alice", "e2e", *[msgs[i] for i in order])
                assert got == [texts[i] for i in order], got
    finally:
        h.close()
    return {
        "name": f"{package.replace('libsignal-', 'libsignal ')} session v{version}",
        "libsignal_client": lib_version,
        "session_version": version,
        "spqr_min_version": min_version,
        "bob": bob,
        "bundle": bundle.to_json(),
        "alice_identity": alice,
        "rng": rng_seed.hex(),
        "steps": steps,
    }


def record_bundle(package: str, one_time: bool) -> dict[str, object]:
    """A prekey bundle made and signed by libsignal itself."""
    h = Harness(package)
    try:
        lib_version = h.call("version")["version"]
        h.call("init", party="bob", registration_id=2424)
        bundle = h.call(
            "bundle",
            party="bob",
            prekey_id=31,
            signed_prekey_id=32,
            kyber_prekey_id=33,
            one_time=one_time,
        )
    finally:
        h.close()
    bundle.pop("ok", None)
    return {
        "name": f"{package.replace('libsignal-', 'libsignal ')} bundle"
        + ("" if one_time else " without one-time prekey"),
        "kind": "bundle",
        "libsignal_client": lib_version,
        "bundle": bundle,
    }


def main() -> None:
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    doc = {
        "concept": "libsignal_wire",
        "source": (
            "@signalapp/libsignal-client 0.72.1, 0.90.0, 0.92.2 and 0.103.0 (Signal's official "
            f"client library, Rust core through its Node binding) under node {node}, driven "
            "by tests/interop/harness.js from vectors/record_libsignal_wire.py: libsignal "
            "(alice) processes e2e's bundle and every 'libsignal' message is libsignal's own "
            "output; every 'e2e' message was accepted by libsignal when recorded. e2e's keys "
            "are derived from SHAKE-256 of a fixed label, and its randomness (ratchet key "
            "pairs, SPQR key pairs and encapsulations) is the SHAKE-256 stream of 'rng'. "
            "Sessions with 0.90.0 and later speak SPQR through three epochs (e2e at minimum "
            "version 1); with 0.72.1 e2e runs at SPQR minimum version 0 and SPQR is off. "
            "'bundle' cases are prekey bundles libsignal generated and signed (XEdDSA over "
            "0x05||SPK and 0x08||Kyber key)."
        ),
        "cases": [record(p, v) for p, v in CASES]
        + [
            record_bundle(p, o)
            for p in ("libsignal-072", "libsignal-090", "libsignal-103")
            for o in (True, False)
        ],
    }
    json.dump(doc, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
