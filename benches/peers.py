"""e2e against other Python Double Ratchet implementations, on the same workloads.

    python benches/peers.py [--rounds N] [--venv DIR]      (or: python -m e2e bench --peers)

Creates (once) its own virtual environment under the user cache directory (or ``--venv``,
or $E2E_PEERS_VENV), pip-installs each peer there, runs the peers' workloads in that
interpreter (this file with ``--inside PEER``, which never imports e2e) and e2e's in this
one, and prints one table of median microseconds per call with each peer's time as a
multiple of e2e's. A peer that fails to install or to run is reported as such in the table.

Peers (PyPI names): DoubleRatchet (python-doubleratchet by Syndace: a Double Ratchet only,
asynchronous API, no wire format, no X3DH), python-axolotl (the classic Python port of
libsignal-protocol-java: X3DH and Double Ratchet, protobuf wire format; needs
protobuf < 4), vodozemac (the Python bindings of Matrix's Rust Olm: X3DH-like 3DH and
Double Ratchet, its own wire format).

Workloads (256-byte payloads, timed like benches/: setup untimed, one call per round):
encrypt, decrypt (in order), oneway (encrypt then decrypt), ping_pong (the parties take
turns, so each message is a DH ratchet step) and setup (key agreement with the first
message and its acceptance; python-doubleratchet: the Double Ratchet's initial message
only).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import venv
from collections.abc import Callable
from pathlib import Path
from typing import Any

PEERS: dict[str, list[str]] = {
    "python-doubleratchet": ["DoubleRatchet==1.3.0"],
    "python-axolotl": ["python-axolotl==0.2.3", "protobuf<4"],
    "vodozemac": ["vodozemac==0.10.0"],
}
WORKLOADS = ["oneway", "encrypt", "decrypt", "ping_pong", "setup"]
SIZE = 256
_HERE = Path(__file__).resolve()

Setup = Callable[[], tuple[Any, ...]]
Target = Callable[..., object]


def _measure(setup: Setup, target: Target, rounds: int, warmup: int = 20) -> float:
    """Median seconds of one ``target(*setup())`` call, setup untimed (as benches/ does)."""
    times: list[float] = []
    clock = time.perf_counter
    for i in range(warmup + rounds):
        args = setup()
        start = clock()
        target(*args)
        elapsed = clock() - start
        if i >= warmup:
            times.append(elapsed)
    return statistics.median(times)


def _no_setup() -> tuple[()]:
    return ()


# -- peers (run inside the peers' venv) -----------------------------------------------------


def _vodozemac() -> dict[str, tuple[Setup, Target]]:
    from vodozemac import Account, AnyOlmMessage

    pt = os.urandom(SIZE)

    def wire(message: Any) -> Any:  # to bytes and back, as a message travels
        kind, data = message.to_parts()
        return AnyOlmMessage.from_parts(kind, data)

    def pair() -> tuple[Any, Any]:
        alice, bob = Account(), Account()
        bob.generate_one_time_keys(1)
        otk = next(iter(bob.one_time_keys.values()))
        a = alice.create_outbound_session(bob.curve25519_key, otk)
        b, _ = bob.create_inbound_session(alice.curve25519_key, wire(a.encrypt(b"hi")).to_pre_key())
        a.decrypt(wire(b.encrypt(b"hello")))
        return a, b

    def encrypt() -> tuple[Setup, Target]:
        a, _ = pair()
        return _no_setup, lambda: a.encrypt(pt).to_parts()

    def decrypt() -> tuple[Setup, Target]:
        a, b = pair()
        return lambda: (a.encrypt(pt).to_parts(),), lambda m: b.decrypt(
            AnyOlmMessage.from_parts(*m)
        )

    def oneway() -> tuple[Setup, Target]:
        a, b = pair()
        return _no_setup, lambda: b.decrypt(wire(a.encrypt(pt)))

    def ping_pong() -> tuple[Setup, Target]:
        turn = list(pair())

        def target() -> None:
            turn[1].decrypt(wire(turn[0].encrypt(pt)))
            turn.reverse()

        return _no_setup, target

    def setup() -> tuple[Setup, Target]:
        alice = Account()

        def prepare() -> tuple[Any, Any, Any]:
            bob = Account()
            bob.generate_one_time_keys(1)
            return bob, bob.curve25519_key, next(iter(bob.one_time_keys.values()))

        def target(bob: Any, identity: Any, otk: Any) -> None:
            a = alice.create_outbound_session(identity, otk)
            bob.create_inbound_session(alice.curve25519_key, wire(a.encrypt(pt)).to_pre_key())

        return prepare, target

    return {
        "encrypt": encrypt(),
        "decrypt": decrypt(),
        "oneway": oneway(),
        "ping_pong": ping_pong(),
        "setup": setup(),
    }


def _doubleratchet() -> dict[str, tuple[Setup, Target]]:
    import asyncio

    from doubleratchet import DoubleRatchet as _DR
    from doubleratchet.recommended import (
        HashFunction,
        aead_aes_hmac,
        diffie_hellman_ratchet_curve25519,
        kdf_hkdf,
        kdf_separate_hmacs,
    )

    class AEAD(aead_aes_hmac.AEAD):
        @staticmethod
        def _get_hash_function() -> HashFunction:
            return HashFunction.SHA_256

        @staticmethod
        def _get_info() -> bytes:
            return b"bench message keys"

    class RootKDF(kdf_hkdf.KDF):
        @staticmethod
        def _get_hash_function() -> HashFunction:
            return HashFunction.SHA_256

        @staticmethod
        def _get_info() -> bytes:
            return b"bench root chain"

    class ChainKDF(kdf_separate_hmacs.KDF):
        @staticmethod
        def _get_hash_function() -> HashFunction:
            return HashFunction.SHA_256

    class DHRatchet(diffie_hellman_ratchet_curve25519.DiffieHellmanRatchet):
        pass

    class DoubleRatchet(_DR):
        @staticmethod
        def _build_associated_data(associated_data: bytes, header: Any) -> bytes:
            return (
                associated_data
                + header.ratchet_pub
                + header.previous_sending_chain_length.to_bytes(8, "big")
                + header.sending_chain_length.to_bytes(8, "big")
            )

    loop = asyncio.new_event_loop()
    run = loop.run_until_complete
    options: dict[str, Any] = {
        "diffie_hellman_ratchet_class": DHRatchet,
        "root_chain_kdf": RootKDF,
        "message_chain_kdf": ChainKDF,
        "message_chain_constant": b"\x02\x01",
        "dos_protection_threshold": 100,
        "max_num_skipped_message_keys": 1000,
        "aead": AEAD,
    }
    ad = os.urandom(66)
    pt = os.urandom(SIZE)

    def start(message: bytes) -> tuple[Any, Any, Any]:
        bob_priv = DHRatchet._generate_priv()
        bob_pub = DHRatchet._derive_pub(bob_priv)
        secret = os.urandom(32)
        alice, first = run(
            DoubleRatchet.encrypt_initial_message(
                shared_secret=secret,
                recipient_ratchet_pub=bob_pub,
                message=message,
                associated_data=ad,
                **options,
            )
        )
        return alice, (secret, bob_priv), first

    def accept(bob_secrets: tuple[bytes, bytes], first: Any) -> Any:
        secret, bob_priv = bob_secrets
        bob, _ = run(
            DoubleRatchet.decrypt_initial_message(
                shared_secret=secret,
                own_ratchet_priv=bob_priv,
                message=first,
                associated_data=ad,
                **options,
            )
        )
        return bob

    def pair() -> tuple[Any, Any]:
        alice, bob_secrets, first = start(b"hi")
        bob = accept(bob_secrets, first)
        run(alice.decrypt_message(run(bob.encrypt_message(b"hello", ad)), ad))
        return alice, bob

    def encrypt() -> tuple[Setup, Target]:
        a, _ = pair()
        return _no_setup, lambda: run(a.encrypt_message(pt, ad))

    def decrypt() -> tuple[Setup, Target]:
        a, b = pair()
        return lambda: (run(a.encrypt_message(pt, ad)),), lambda m: run(b.decrypt_message(m, ad))

    def oneway() -> tuple[Setup, Target]:
        a, b = pair()
        return _no_setup, lambda: run(b.decrypt_message(run(a.encrypt_message(pt, ad)), ad))

    def ping_pong() -> tuple[Setup, Target]:
        turn = list(pair())

        def target() -> None:
            run(turn[1].decrypt_message(run(turn[0].encrypt_message(pt, ad)), ad))
            turn.reverse()

        return _no_setup, target

    def setup() -> tuple[Setup, Target]:
        def target() -> None:
            alice, bob_secrets, first = start(pt)
            accept(bob_secrets, first)

        return _no_setup, target

    return {
        "encrypt": encrypt(),
        "decrypt": decrypt(),
        "oneway": oneway(),
        "ping_pong": ping_pong(),
        "setup": setup(),
    }


def _axolotl() -> dict[str, tuple[Setup, Target]]:
    from axolotl.ecc.curve import Curve
    from axolotl.protocol.prekeywhispermessage import PreKeyWhisperMessage
    from axolotl.protocol.whispermessage import WhisperMessage
    from axolotl.sessionbuilder import SessionBuilder
    from axolotl.sessioncipher import SessionCipher
    from axolotl.state.prekeybundle import PreKeyBundle
    from axolotl.state.prekeyrecord import PreKeyRecord
    from axolotl.state.signedprekeyrecord import SignedPreKeyRecord
    from axolotl.tests.inmemoryaxolotlstore import InMemoryAxolotlStore

    alice_id, bob_id = 5, 2
    pt = os.urandom(SIZE)

    def bob_keys() -> tuple[Any, Any]:
        store = InMemoryAxolotlStore()
        opk, spk = Curve.generateKeyPair(), Curve.generateKeyPair()
        sig = Curve.calculateSignature(
            store.getIdentityKeyPair().getPrivateKey(), spk.getPublicKey().serialize()
        )
        store.storePreKey(31337, PreKeyRecord(31337, opk))
        store.storeSignedPreKey(22, SignedPreKeyRecord(22, int(time.time() * 1000), spk, sig))
        bundle = PreKeyBundle(
            store.getLocalRegistrationId(), 1, 31337, opk.getPublicKey(), 22,
            spk.getPublicKey(), sig, store.getIdentityKeyPair().getPublicKey(),
        )  # fmt: skip
        return store, bundle

    def start(alice: Any, bob: Any, bundle: Any, message: bytes) -> tuple[Any, Any, bytes]:
        SessionBuilder(alice, alice, alice, alice, bob_id, 1).processPreKeyBundle(bundle)
        a = SessionCipher(alice, alice, alice, alice, bob_id, 1)
        first = a.encrypt(message).serialize()
        b = SessionCipher(bob, bob, bob, bob, alice_id, 1)
        b.decryptPkmsg(PreKeyWhisperMessage(serialized=first))
        return a, b, first

    def pair() -> tuple[Any, Any]:
        bob, bundle = bob_keys()
        a, b, _ = start(InMemoryAxolotlStore(), bob, bundle, b"hi")
        a.decryptMsg(WhisperMessage(serialized=b.encrypt(b"hello").serialize()))
        return a, b

    def encrypt() -> tuple[Setup, Target]:
        a, _ = pair()
        return _no_setup, lambda: a.encrypt(pt).serialize()

    def decrypt() -> tuple[Setup, Target]:
        a, b = pair()
        return lambda: (a.encrypt(pt).serialize(),), lambda m: b.decryptMsg(
            WhisperMessage(serialized=m)
        )

    def oneway() -> tuple[Setup, Target]:
        a, b = pair()
        return _no_setup, lambda: b.decryptMsg(WhisperMessage(serialized=a.encrypt(pt).serialize()))

    def ping_pong() -> tuple[Setup, Target]:
        turn = list(pair())

        def target() -> None:
            turn[1].decryptMsg(WhisperMessage(serialized=turn[0].encrypt(pt).serialize()))
            turn.reverse()

        return _no_setup, target

    def setup() -> tuple[Setup, Target]:
        def prepare() -> tuple[Any, Any, Any]:
            bob, bundle = bob_keys()
            return InMemoryAxolotlStore(), bob, bundle

        return prepare, lambda alice, bob, bundle: start(alice, bob, bundle, pt)

    return {
        "encrypt": encrypt(),
        "decrypt": decrypt(),
        "oneway": oneway(),
        "ping_pong": ping_pong(),
        "setup": setup(),
    }


_PEER_WORKLOADS: dict[str, Callable[[], dict[str, tuple[Setup, Target]]]] = {
    "python-doubleratchet": _doubleratchet,
    "python-axolotl": _axolotl,
    "vodozemac": _vodozemac,
}


def inside(peer: str, rounds: int) -> dict[str, float]:
    """Run one peer's workloads (in the peers' venv); median microseconds per call."""
    out: dict[str, float] = {}
    for name, (setup, target) in _PEER_WORKLOADS[peer]().items():
        n = max(20, rounds // 10) if name == "setup" else rounds
        out[name] = _measure(setup, target, n) * 1e6
    return out


# -- driver (runs in the e2e environment) -------------------------------------------------


def default_venv() -> Path:
    if os.environ.get("E2E_PEERS_VENV"):
        return Path(os.environ["E2E_PEERS_VENV"])
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "e2e-bench-peers" / f"py{sys.version_info.major}{sys.version_info.minor}"


def ensure_venv(path: Path) -> Path:
    python = path / "bin" / "python"
    if not python.exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(path)
    return python


def install(python: Path, peer: str) -> str | None:
    """pip-install a peer; None on success, else the last line of pip's complaint."""
    cmd = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *PEERS[peer]]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"install failed: {exc.__class__.__name__}"
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        return "install failed: " + (lines[-1][:80] if lines else f"pip exit {done.returncode}")
    return None


def run_peer(python: Path, peer: str, rounds: int) -> dict[str, float] | str:
    cmd = [str(python), str(_HERE), "--inside", peer, "--rounds", str(rounds)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"run failed: {exc.__class__.__name__}"
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        return "run failed: " + (lines[-1][:80] if lines else f"exit {done.returncode}")
    result: dict[str, float] = json.loads(done.stdout)
    return result


def measure_e2e(rounds: int) -> dict[str, dict[str, float]]:
    """e2e's medians (µs) per suite name for the peer workloads, in this interpreter."""
    sys.path.insert(0, str(_HERE.parent.parent))
    from benches.workloads import SUITE_NAMES, WORKLOADS

    out: dict[str, dict[str, float]] = {}
    for suite, name in sorted(SUITE_NAMES.items(), reverse=True):
        out[name] = {}
        for workload in WORKLOADS_ORDER:
            setup, target = WORKLOADS[workload].e2e(suite, SIZE)
            n = max(20, rounds // 10) if workload == "setup" else rounds
            out[name][workload] = _measure(setup, target, n) * 1e6
    return out


WORKLOADS_ORDER = WORKLOADS


def table(e2e: dict[str, dict[str, float]], peers: dict[str, dict[str, float] | str]) -> str:
    """One Markdown table: µs per call; a peer's '×' is its time over e2e's PQ suite."""
    heads = ["workload (256 B)", "e2e PQ µs", "e2e SIGNAL µs"] + [
        f"{p} µs (× e2e PQ)" for p in peers
    ]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" + "---:|" * (len(heads) - 1)]
    for workload in WORKLOADS:
        ours = e2e["pq"][workload]
        cells = [workload, f"{ours:.1f}", f"{e2e['signal'][workload]:.1f}"]
        for result in peers.values():
            if isinstance(result, str):
                cells.append(result)
            elif workload in result:
                cells.append(f"{result[workload]:.1f} ({result[workload] / ours:.2f}×)")
            else:
                cells.append("n/a")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3000)
    parser.add_argument("--venv", type=Path, default=None)
    parser.add_argument("--inside", choices=sorted(PEERS), help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.inside:
        print(json.dumps(inside(args.inside, args.rounds)))
        return 0
    path = args.venv or default_venv()
    results: dict[str, dict[str, float] | str] = {}
    try:
        python = ensure_venv(path)
    except Exception as exc:  # no venv, no peers: say so, still measure e2e
        python = None
        results = {p: f"no venv: {exc.__class__.__name__}" for p in PEERS}
    if python is not None:
        for peer in PEERS:
            print(f"installing and running {peer} ...", file=sys.stderr, flush=True)
            failure = install(python, peer)
            results[peer] = failure if failure else run_peer(python, peer, args.rounds)
    print("measuring e2e ...", file=sys.stderr, flush=True)
    ours = measure_e2e(args.rounds)
    print(table(ours, results))
    if args.json:
        args.json.write_text(json.dumps({"e2e": ours, "peers": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
