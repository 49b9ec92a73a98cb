"""e2e against other Double Ratchet implementations, measured side by side.

    python benches/peers.py [--seconds S] [--venv DIR] [--json FILE] [--markdown]
    (or: python -m e2e bench --peers)

Peers (PyPI names): vodozemac (the Python bindings of Matrix's Rust Olm: X3DH-like 3DH and
Double Ratchet, its own wire format), DoubleRatchet (python-doubleratchet by Syndace: a Double
Ratchet only, asynchronous API, no wire format, no X3DH) and python-axolotl (the classic Python
port of libsignal-protocol-java: X3DH and Double Ratchet, protobuf wire format; needs
protobuf < 4).

How they are measured (the method of benches/interleave.py, as for the floors): e2e's workload
(PQ suite, 256 B) is side A and the peer's the same workload is side B, in interleaved round
pairs (A B, B A, ...), fresh untimed setup per call where one is needed; the table gives the
median of the per-round ratios e2e / peer (below 1: e2e is faster), its interquartile range
and its 99 % interval.

* vodozemac and python-doubleratchet are installed *beside e2e*: one venv (under the user cache
  directory, or ``--venv``, or $E2E_PEERS_VENV) holds them and e2e's own dependencies at the
  versions this interpreter has; this file runs there with ``--beside`` and imports e2e from
  the source tree, so both sides run in ONE process.
* python-axolotl needs protobuf < 4, so it gets a venv of its own and runs in a *worker
  process* (this file with ``--worker python-axolotl``); the process measuring e2e sends it
  one batch at a time and runs e2e's batches in between, so the two still alternate batch by
  batch. The worker protocol is one JSON object per line on stdin/stdout:
  it first prints ``{"ready": {workload: needs_setup}}``; then for each
  ``{"workload": W, "n": N, "how": [loop, cpu, cpu_per_call]}`` it runs one batch of N calls
  timed as benches/interleave.py's ``_batch`` does and prints ``{"t": seconds_per_call}``.
  **Another peer in another runtime** (e.g. libsignal's native implementation through node)
  plugs in as a :class:`Peer` with a ``command`` that speaks the same protocol.

A peer that fails to install or to run is reported as such in the table.

Workloads (256-byte payloads): encrypt, decrypt (in order), oneway (encrypt then decrypt),
ping_pong (the parties take turns, so each message is a DH ratchet step) and setup (key
agreement with the first message and its acceptance; python-doubleratchet: the Double
Ratchet's initial message only).
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
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

_HERE = Path(__file__).resolve()
_ROOT = _HERE.parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from benches import interleave  # noqa: E402  (stdlib only: importable in every peer venv)
from benches.check_ratios import median_ci  # noqa: E402

WORKLOADS = ["oneway", "encrypt", "decrypt", "ping_pong", "setup"]
SIZE = 256

Setup = Callable[[], tuple[Any, ...]]
Target = Callable[..., object]


@dataclass(frozen=True)
class Peer:
    """A peer implementation: what to pip-install, and where it runs.

    ``venv`` "beside": installed beside e2e and measured in e2e's process. Any other name: a
    venv of that name and a worker process (this file with ``--worker``), unless ``command``
    gives another worker (any runtime speaking the protocol in the module docstring; its
    ``requirements`` are then installed by whoever provides the command).
    """

    requirements: tuple[str, ...]
    venv: str
    command: tuple[str, ...] | None = None
    note: str = ""


PEERS: dict[str, Peer] = {
    "vodozemac": Peer(("vodozemac==0.10.0",), "beside"),
    "python-doubleratchet": Peer(("DoubleRatchet==1.3.0",), "beside"),
    "python-axolotl": Peer(("python-axolotl==0.2.3", "protobuf<4"), "axolotl"),
    # libsignal's native implementation through its Node binding: tests/interop/harness.js in
    # worker mode (installed by `cd tests/interop && npm ci`; AGPL-3.0, a measuring tool only).
    "libsignal-0.90-node": Peer(
        ("@signalapp/libsignal-client@0.90.0",),
        "node",
        command=("node", str(_ROOT / "tests/interop/harness.js"), "libsignal-090", "--worker"),
    ),
}


def _no_setup() -> tuple[()]:
    return ()


# -- the peers' workloads (each function runs where its library is installed) -----------------


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


# -- e2e's side and the measurement (in the beside venv, which can import e2e) -----------------


def _e2e_workloads() -> dict[str, tuple[Setup, Target]]:
    from benches.workloads import WORKLOADS as E2E
    from e2e.suite import PQ

    return {w: E2E[w].e2e(PQ.id, SIZE) for w in WORKLOADS}


class Worker:
    """A peer in its own interpreter (or runtime), driven one batch at a time."""

    def __init__(self, command: list[str]) -> None:
        self.proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        self.ready: dict[str, bool] = self._read()["ready"]

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker exited ({self.proc.wait()})")
        out: dict[str, Any] = json.loads(line)
        return out

    def batch(self, workload: str) -> interleave.Batch:
        def run(n: int, how: interleave.Timing) -> float:
            assert self.proc.stdin is not None
            how_ = [how.loop, how.cpu, how.cpu_per_call]
            self.proc.stdin.write(json.dumps({"workload": workload, "n": n, "how": how_}) + "\n")
            self.proc.stdin.flush()
            return float(self._read()["t"])

        return run

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


def _summary(result: interleave.Result) -> dict[str, Any]:
    ratios = sorted(x / y for x, y in zip(result.a, result.b, strict=True))
    low, median, high = median_ci(ratios)
    q = statistics.quantiles(ratios, n=4)
    return {
        "e2e_us": statistics.median(result.a) * 1e6,
        "peer_us": statistics.median(result.b) * 1e6,
        "ratio": median,
        "iqr": [q[0], q[2]],
        "ci": [low, high],
        "rounds": len(ratios),
        "range": [ratios[0], ratios[-1]],
        "timing": result.timing,
    }


def beside(peers: list[str], workers: dict[str, list[str]], seconds: float) -> dict[str, Any]:
    """Measure e2e against each peer: in-process peers directly, worker peers through their
    worker; {peer: {workload: summary} or "failure"}."""
    ours = _e2e_workloads()
    out: dict[str, Any] = {}
    for name in peers:
        try:
            theirs = _PEER_WORKLOADS[name]()
            out[name] = {}
            for w in WORKLOADS:
                r = interleave.measure(
                    interleave.side(*ours[w]), interleave.side(*theirs[w]), None,
                    budget=seconds, cap=seconds,
                )  # fmt: skip
                out[name][w] = _summary(r)
        except Exception as exc:  # noqa: BLE001 - a peer that cannot run is reported
            out[name] = f"run failed: {exc.__class__.__name__}: {str(exc)[:60]}"
    for name, command in workers.items():
        try:
            worker = Worker(command)
        except Exception as exc:  # noqa: BLE001
            out[name] = f"worker failed: {exc.__class__.__name__}: {str(exc)[:60]}"
            continue
        try:
            out[name] = {}
            for w in WORKLOADS:
                mine = interleave.side(*ours[w])
                how = interleave.Timing(loop=mine.setup is None and not worker.ready[w], cpu=True)
                r = interleave.measure_batches(
                    lambda n, h, s=mine: interleave._batch(s, n, h),  # type: ignore[misc]
                    worker.batch(w), how, None, seconds, seconds,
                )  # fmt: skip
                out[name][w] = _summary(r)
        except Exception as exc:  # noqa: BLE001
            out[name] = f"run failed: {exc.__class__.__name__}: {str(exc)[:60]}"
        finally:
            worker.close()
    return out


def worker_main(peer: str, stdin: IO[str], stdout: IO[str]) -> None:
    """The worker side of the protocol (see the module docstring)."""
    sides = {w: interleave.side(*f) for w, f in _PEER_WORKLOADS[peer]().items()}
    stdout.write(json.dumps({"ready": {w: s.setup is not None for w, s in sides.items()}}) + "\n")
    stdout.flush()
    for line in stdin:
        msg = json.loads(line)
        loop, cpu, per_call = msg["how"]
        how = interleave.Timing(loop=loop, cpu=cpu, cpu_per_call=per_call)
        t = interleave._batch(sides[msg["workload"]], int(msg["n"]), how)
        stdout.write(json.dumps({"t": t}) + "\n")
        stdout.flush()


# -- driver (any interpreter with e2e's dependencies) ----------------------------------------


def default_venv() -> Path:
    if os.environ.get("E2E_PEERS_VENV"):
        return Path(os.environ["E2E_PEERS_VENV"])
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "e2e-bench-peers" / f"py{sys.version_info.major}{sys.version_info.minor}"


def _pins() -> list[str]:
    """e2e's dependencies at the versions this interpreter runs, for the beside venv."""
    from importlib.metadata import version

    return [f"{d}=={version(d)}" for d in ("cryptography", "pynacl", "cbor2")]


def ensure_venv(path: Path, requirements: list[str]) -> Path | str:
    """A venv at ``path`` with ``requirements``: its python, or why not."""
    python = path / "bin" / "python"
    stamp = path / "requirements.txt"
    try:
        if not python.exists():
            venv.EnvBuilder(with_pip=True, clear=True).create(path)
        if stamp.exists() and stamp.read_text() == "\n".join(requirements):
            return python
        cmd = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        done = subprocess.run(
            cmd + requirements, capture_output=True, text=True, timeout=900, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"install failed: {exc.__class__.__name__}"
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        return "install failed: " + (lines[-1][:80] if lines else f"pip exit {done.returncode}")
    stamp.write_text("\n".join(requirements))
    return python


def table(results: dict[str, Any]) -> str:
    """One Markdown table: per workload, e2e's µs and each peer's, and the median per-round
    ratio e2e / peer with its interquartile range."""
    heads = ["workload (256 B)"]
    for peer in results:
        heads += [f"e2e µs / {peer} µs", f"e2e ÷ {peer}: median [IQR] (99 % CI)"]
    lines = ["| " + " | ".join(heads) + " |", "|---" + "|---:" * (len(heads) - 1) + "|"]
    for w in WORKLOADS:
        cells = [w]
        for result in results.values():
            if isinstance(result, str):
                cells += [result, ""]
                continue
            r = result[w]
            cells.append(f"{r['e2e_us']:.1f} / {r['peer_us']:.1f}")
            cells.append(
                f"**{r['ratio']:.2f}** [{r['iqr'][0]:.2f}–{r['iqr'][1]:.2f}] "
                f"({r['ci'][0]:.2f}–{r['ci'][1]:.2f})"
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per row")
    parser.add_argument("--venv", type=Path, default=None, help="directory of the peers' venvs")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    parser.add_argument("--only", nargs="*", default=None, help="these peers only")
    parser.add_argument(
        "--gap", action="store_true", help="where e2e's one-way time goes, next to vodozemac's"
    )
    parser.add_argument("--gap-inside", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker", choices=sorted(PEERS), help=argparse.SUPPRESS)
    parser.add_argument("--beside", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--workers", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker_main(args.worker, sys.stdin, sys.stdout)
        return 0
    if args.gap_inside:
        from benches import gap

        rows = gap.run(args.seconds)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2))
        print(gap.table(rows))
        print()
        print(gap.counts_table(gap.call_counts()))
        return 0
    if args.beside is not None:
        print(json.dumps(beside(args.beside, json.loads(args.workers), args.seconds)))
        return 0

    base = args.venv or default_venv()
    chosen = args.only or list(PEERS)
    results: dict[str, Any] = {}
    in_process = [p for p in chosen if PEERS[p].venv == "beside"]
    requirements = _pins() + [r for p in in_process for r in PEERS[p].requirements]
    print("preparing the peers' venvs ...", file=sys.stderr, flush=True)
    python = ensure_venv(base / "beside", requirements)
    if isinstance(python, str):
        print(python, file=sys.stderr)
        return 1
    if args.gap:
        cmd = [str(python), str(_HERE), "--gap-inside", "--seconds", str(args.seconds)]
        if args.json:
            cmd += ["--json", str(args.json)]
        return subprocess.run(cmd, check=False).returncode
    workers: dict[str, list[str]] = {}
    for p in chosen:
        peer = PEERS[p]
        if peer.venv == "beside":
            continue
        if peer.command:
            workers[p] = list(peer.command)
            continue
        own = ensure_venv(base / peer.venv, list(peer.requirements))
        if isinstance(own, str):
            results[p] = own
        else:
            workers[p] = [str(own), str(_HERE), "--worker", p]
    print("measuring, interleaved ...", file=sys.stderr, flush=True)
    cmd = [str(python), str(_HERE), "--seconds", str(args.seconds), "--beside", *in_process]
    done = subprocess.run(
        [*cmd, "--workers", json.dumps(workers)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        print(done.stderr[-2000:], file=sys.stderr)
        return 1
    results = {**json.loads(done.stdout), **results}
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
