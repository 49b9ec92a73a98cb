"""Crash tests: forked children run a scripted conversation between two SQLite stores and
kill themselves (SIGKILL or ``os._exit``) at a named fault point; the parent then restarts
from the files on disk and checks that nothing was lost or reused:

* no message key is used for two frames that reached the wire (each decrypts exactly once);
* every message a sender committed is on the wire after recovery (its outbox is re-sent);
* every acknowledged message is in the receiver's inbox with the right plaintext;
* every unacknowledged message still decrypts after the restart;
* ``PRAGMA integrity_check`` is clean and both sessions keep working.

The conversation follows the ordering rule: a sender commits the advanced session together
with the frame in its outbox before the frame goes on the wire; a receiver commits the new
state together with the plaintext (and its read cursor) before it acknowledges.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import struct
import tempfile
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from e2e import PQ
from e2e.errors import StateError
from e2e.store import (
    Address,
    StoreTransaction,
    decrypt_and_store,
    encrypt_and_store,
    set_fault_hook,
    upkeep,
)
from e2e.store.atrest import StorageKey
from e2e.store.sqlite import SqliteStore

pytestmark = pytest.mark.crash

ITERATIONS = int(os.environ.get("E2E_CRASH_ITERATIONS", "200"))
FAULTS = [
    "after_encrypt_before_commit",
    "mid_transaction",
    "before_commit",
    "after_commit_before_send",
    "after_send_before_outbox_clear",
    "after_decrypt_before_commit",
    "after_commit_before_ack",
    "recovery_after_resend",
]
KEY = StorageKey(bytes(range(32)))
A, B = Address("alice", 1), Address("bob", 2)
# party -> (its address for the peer, the peer's address, label of what it sends)
PARTIES = {"a": (A, B, "A"), "b": (B, A, "B")}
_REC = struct.Struct(">II")


# -- the wire and the acks: append-only files --------------------------------------------


def append(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        # One write: a killed process leaves it whole or absent. No fsync: these tests kill
        # processes, not the machine, and the page cache outlives a process.
        os.write(fd, data)
    finally:
        os.close(fd)


def send_wire(path: Path, seq: int, frame: bytes) -> None:
    append(path, _REC.pack(seq, len(frame)) + frame)


def read_wire(path: Path) -> list[tuple[int, bytes]]:
    """Frames in order of first appearance, deduplicated by sequence number."""
    data = path.read_bytes() if path.exists() else b""
    out: dict[int, bytes] = {}
    pos = 0
    while pos + _REC.size <= len(data):
        seq, size = _REC.unpack_from(data, pos)
        frame = data[pos + _REC.size : pos + _REC.size + size]
        assert len(frame) == size, "torn wire record"
        if seq in out:
            assert out[seq] == frame, "a sequence number was sent with two different frames"
        out[seq] = frame
        pos += _REC.size + size
    assert pos == len(data)
    return sorted(out.items())


def read_acks(path: Path) -> list[int]:
    data = path.read_bytes() if path.exists() else b""
    assert len(data) % 4 == 0
    return [int.from_bytes(data[i : i + 4], "big") for i in range(0, len(data), 4)]


# -- the scripted application ------------------------------------------------------------


class Party:
    def __init__(self, root: Path, me: str, fault: Callable[[str], None]) -> None:
        self.me, self.peer = me, "b" if me == "a" else "a"
        self.addr, self.peer_addr, self.label = PARTIES[me]
        self.store = SqliteStore(root / f"{me}.db", KEY)
        self.wire_out = root / f"wire_{me}{self.peer}"
        self.wire_in = root / f"wire_{self.peer}{me}"
        self.acks_out = root / f"acks_{me}"  # what this party acknowledged receiving
        self.fault = fault

    def recover(self) -> None:
        """Re-send what was committed but may not have reached the wire."""
        on_wire = {seq for seq, _ in read_wire(self.wire_out)}
        with self.store.transaction() as tx:
            for key in tx.app_keys("outbox/"):
                seq = int(key.removeprefix("outbox/"))
                frame = tx.app_get(key)
                assert frame is not None
                if seq not in on_wire:
                    send_wire(self.wire_out, seq, frame)
                    self.fault("recovery_after_resend")
                tx.app_delete(key)

    def send(self) -> None:
        try:
            with self.store.transaction() as tx:
                if tx.load_session(self.peer_addr) is None:
                    return  # Bob has no session until Alice's first message arrives
                seq = counter(tx, "sent")
                frame = tx.encrypt(self.peer_addr, expected(self.label, seq))
                self.fault("after_encrypt_before_commit")
                tx.app_put(f"outbox/{seq:06d}", frame)
                tx.app_put("sent", str(seq + 1).encode())
                self.fault("mid_transaction")
        except StateError:
            return  # a responder cannot send before it has received
        self.fault("after_commit_before_send")
        send_wire(self.wire_out, seq, frame)
        self.fault("after_send_before_outbox_clear")
        with self.store.transaction() as tx:
            tx.app_delete(f"outbox/{seq:06d}")

    def receive(self) -> bool:
        frames = read_wire(self.wire_in)
        with self.store.transaction() as tx:
            cursor = counter(tx, "cursor")
            if cursor >= len(frames):
                return False
            seq, frame = frames[cursor]
            assert seq == cursor
            plaintext = tx.decrypt(self.peer_addr, frame, allowed_suites=(PQ,))
            self.fault("after_decrypt_before_commit")
            tx.app_put(f"inbox/{seq:06d}", plaintext)
            tx.app_put("cursor", str(cursor + 1).encode())
        self.fault("after_commit_before_ack")
        append(self.acks_out, seq.to_bytes(4, "big"))
        return True

    def close(self) -> None:
        self.store.close()


def counter(tx: StoreTransaction, name: str) -> int:
    raw = tx.app_get(name)
    return 0 if raw is None else int(raw)


def expected(label: str, seq: int) -> bytes:
    return f"{label}->#{seq}".encode()


def child(root: Path, seed: int, fault: str, hit: int) -> None:
    """Runs in the forked child; never returns."""
    code = 0
    try:
        hits = 0
        how = seed % 2

        def hook(name: str) -> None:
            nonlocal hits
            if name == fault:
                hits += 1
                if hits == hit:
                    if how:
                        os.kill(os.getpid(), signal.SIGKILL)
                    os._exit(137)

        set_fault_hook(hook)
        rng = random.Random(seed)
        parties = {m: Party(root, m, hook) for m in "ab"}
        for p in parties.values():
            p.recover()
        for _ in range(rng.randint(3, 9)):
            p = parties[rng.choice("ab")]
            if rng.random() < 0.5:
                p.send()
            else:
                p.receive()
    except BaseException:
        (root / "child_error.txt").write_text(traceback.format_exc())
        code = 1
    os._exit(code)


def run_child(root: Path, seed: int, fault: str, hit: int) -> bool:
    """Fork a child; True if it was killed at its fault point."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        child(root, seed, fault, hit)
    _, status = os.waitpid(pid, 0)
    err = root / "child_error.txt"
    if err.exists():
        pytest.fail(f"child failed (seed {seed}, fault {fault}):\n{err.read_text()}")
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL
        return True
    code = os.WEXITSTATUS(status)
    assert code in (0, 137), code
    return code == 137


# -- the checks ----------------------------------------------------------------------------


def verify(root: Path) -> None:
    for me in "ab":
        conn = sqlite3.connect(root / f"{me}.db")
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        conn.close()
    parties = {m: Party(root, m, lambda name: None) for m in "ab"}
    try:
        for p in parties.values():
            p.recover()
        for sender in parties.values():
            receiver = parties[sender.peer]
            frames = read_wire(sender.wire_out)
            # nothing committed was lost: the wire holds 0..sent-1 exactly
            with sender.store.transaction() as tx:
                sent = counter(tx, "sent")
                assert tx.app_keys("outbox/") == []
            assert [seq for seq, _ in frames] == list(range(sent))
            # no (ratchet key, counter) went out twice: the headers are sealed (suite 3), so
            # this is checked by decryption: a second frame under a used message key is
            # refused (DuplicateMessage) when the receiver reaches it
            with receiver.store.transaction() as tx:
                cursor = counter(tx, "cursor")
                for seq in range(cursor):  # every stored message is right
                    assert tx.app_get(f"inbox/{seq:06d}") == expected(sender.label, seq)
            acked = read_acks(receiver.acks_out)
            assert all(seq < cursor for seq in acked), "acknowledged but not stored"
            assert acked == sorted(set(acked))
            # every unacknowledged (unstored) message still decrypts after the restart
            while receiver.receive():
                pass
            with receiver.store.transaction() as tx:
                assert counter(tx, "cursor") == sent
                for seq in range(sent):
                    assert tx.app_get(f"inbox/{seq:06d}") == expected(sender.label, seq)
        # both sessions keep working
        for _ in range(2):
            for p in (parties["a"], parties["b"], parties["a"]):
                p.send()
                parties[p.peer].receive()
        assert read_wire(parties["a"].wire_out) and read_wire(parties["b"].wire_out)
    finally:
        for p in parties.values():
            p.close()


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Alice has initiated to Bob (nothing sent yet): the first delivery sets Bob up."""
    root = tmp_path_factory.mktemp("crash-template")
    stores = {m: SqliteStore(root / f"{m}.db", KEY) for m in "ab"}
    for s in stores.values():
        with s.transaction() as tx:
            upkeep.ensure_identity(tx)
            upkeep.rotate(tx, PQ)
            upkeep.replenish(tx, PQ, target=2)
    with stores["b"].transaction() as tx:
        bundle = upkeep.bundle(tx, PQ)
    with stores["a"].transaction() as tx:
        tx.initiate(B, bundle, allowed_suites=(PQ,))
    for s in stores.values():
        s.close()
    for m in "ab":  # fold the WAL into the main file so a copy is one file
        conn = sqlite3.connect(root / f"{m}.db")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
    return root


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs directory when there is one: these tests kill processes, not the machine, so
    fsync buys nothing here and only slows the iterations down."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        root = Path(tempfile.mkdtemp(prefix="e2e-crash-", dir=shm))
        try:
            yield root
        finally:
            shutil.rmtree(root, ignore_errors=True)
    else:
        yield tmp_path


def test_crash_recovery(template: Path, workdir: Path) -> None:
    tmp_path = workdir
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    kills: dict[str, int] = dict.fromkeys(FAULTS, 0)
    for i in range(ITERATIONS):
        root = tmp_path / f"it{i}"
        root.mkdir()
        for m in "ab":
            shutil.copyfile(template / f"{m}.db", root / f"{m}.db")
            # with its epoch keeper: a database copied without it is one whose freshness
            # cannot be proven, whose sessions must ratchet before they send (SPEC.md §9.7)
            shutil.copyfile(template / f"{m}.db-epoch", root / f"{m}.db-epoch")
        last = ""
        for _ in range(rng.randint(1, 3)):  # one to three crashes, then the restart checks
            for _ in range(4):  # a child that never reached its fault point just goes on
                fault = rng.choice(FAULTS)
                if last == "after_commit_before_send" and rng.random() < 0.9:
                    fault = "recovery_after_resend"  # crash again while re-sending
                if run_child(root, rng.getrandbits(32), fault, rng.randint(1, 2)):
                    kills[fault] += 1
                    last = fault
                    break
        try:
            verify(root)
        except AssertionError as exc:
            raise AssertionError(f"iteration {i} ({sorted(os.listdir(root))}): {exc}") from exc
        shutil.rmtree(root)
    total = sum(kills.values())
    print(f"crash kills: {total} {kills}")
    if ITERATIONS >= 200:
        assert total >= 200, kills
        assert all(n >= (2 if f == "recovery_after_resend" else 5) for f, n in kills.items()), kills


def test_wire_helpers(tmp_path: Path) -> None:
    w = tmp_path / "w"
    send_wire(w, 0, b"x")
    send_wire(w, 0, b"x")
    send_wire(w, 1, b"yy")
    assert read_wire(w) == [(0, b"x"), (1, b"yy")]
    send_wire(w, 1, b"zz")
    with pytest.raises(AssertionError):
        read_wire(w)


def test_two_processes_never_advance_one_session_concurrently(
    template: Path, workdir: Path
) -> None:
    """BEGIN IMMEDIATE serializes processes sharing one file: no counter is used twice."""
    for m in "ab":
        shutil.copyfile(template / f"{m}.db", workdir / f"{m}.db")
        shutil.copyfile(template / f"{m}.db-epoch", workdir / f"{m}.db-epoch")
    pids = []
    for w in range(3):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 0
            try:
                store = SqliteStore(workdir / "a.db", KEY)
                for n in range(8):
                    frame = encrypt_and_store(store, B, b"w%d-%d" % (w, n))
                    send_wire(workdir / f"out{w}", n, frame)
                store.close()
            except BaseException:
                (workdir / f"err{w}").write_text(traceback.format_exc())
                code = 1
            os._exit(code)
        pids.append(pid)
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, [
            p.read_text() for p in workdir.glob("err*")
        ]
    frames = [f for w in range(3) for _, f in read_wire(workdir / f"out{w}")]
    assert len(frames) == 24
    bob = SqliteStore(workdir / "b.db", KEY)
    # Each frame decrypts once, to its own plaintext: no message key went out twice (a frame
    # under a used key would be refused as a duplicate).
    got = {decrypt_and_store(bob, A, f, allowed_suites=(PQ,)) for f in frames}
    assert len(got) == 24
    bob.close()
