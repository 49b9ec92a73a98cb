"""Write the seed corpus of fuzz_wire: ``python fuzz/make_wire_corpus.py``.

Valid bodies of every kind (picked by their first byte, see fuzz_wire.BODIES) and a few
malformed ones; written as ``tests/corpus/wire/seed-<sha1>``.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from e2e.keys import KeyPair
from e2e.platform import wire
from fuzz._harness import CORPUS, DetRng
from fuzz.fuzz_wire import BODIES


def seeds() -> list[bytes]:
    rng = DetRng(b"wire-corpus")
    key = KeyPair.from_private_bytes(rng(32))
    bodies: list[object] = [
        wire.RegisterAccount.create(b"alice", 0, key, 0, rng),
        wire.RegisterDevice(b"\xa0"),
        wire.PublishDevices(b"signed list"),
        wire.ListDevices(b"shop"),
        wire.DeviceList(key.public, 1, (b"c1", b"c2"), b"signed list"),
        wire.UploadPrekeys((b"b1", b"b2"), b"last"),
        wire.CountPrekeys(),
        wire.PrekeyCount(3, True),
        wire.ClaimPrekey(b"bob", 1),
        wire.ClaimedPrekey(b"bundle", True),
        wire.Precheck.of(1, b"shop", [(b"shop", 1), (b"alice", 2)]),
        wire.Submit((b"env1", b"env2")),
        wire.Receipt(bytes(16), 1_767_225_600, 2, 40),
        wire.Fetch(b"alice", 1, 5000, 10),
        wire.Mailbox((b"d1",), 0),
        wire.Ack(b"alice", 1, (1, 2, 3)),
        wire.Control(1, b"shop", True),
        wire.WindowQuery(b"shop"),
        wire.WindowState(True),
        wire.SubmitReport(b"report", True),
        wire.ReportVerdict((bytes(16),), (5,), (2,)),
        wire.BillQuery(),
        wire.BillLines(1, (2, 3), (0, 0), (4, 1), (40, 80)),
        wire.WireError("stale_device_list", "changed", ((b"a", 1),), ((b"b", 2),)),
        wire.Ok(),
        wire.Route(b"alice", (1, 2)),
        wire.Designate((1,)),
        wire.RegisterTemplate(b"ship-1", 2, b"Order shipped."),
        wire.ListTemplates(b"shop"),
        wire.TemplateList((b"ship-1",), (2,), (bytes(32),)),
        wire.SubmitClassReport(b"item"),
        wire.ClassVerdict(bytes(16), 1, 3, 80),
        wire.LogHeadQuery(),
        wire.LogHead(b"head", bytes(32), bytes(32), bytes(64)),
        wire.LogLookup(b"alice", 3),
        wire.LogEntry(b"entry", b"proof"),
        wire.LogConsistencyQuery(1, 3),
        wire.LogConsistency(b"proof"),
        wire.LogEntriesQuery(0, 2),
        wire.LogEntries((b"e1", b"e2"), (b"p1", b"p2")),
        wire.BusinessCertQuery(b"shop"),
        wire.BusinessCert(b"cert"),
        wire.DeleteAccount(b"signed last list"),
        wire.ProvisionSend(bytes(16), b"sealed grant"),
        wire.ProvisionFetch(bytes(16)),
        wire.Provisioned(b"sealed grant"),
        wire.SetRecovery(bytes(32), bytes(92)),
        wire.RecoveryFetch(b"alice", 1_767_225_600, bytes(16), bytes(64)),
        wire.Recovered(bytes(92), key.public, 0, 0, b"signed list"),
        wire.LogOpen(1, 3),
    ]
    out = []
    for body in bodies:
        index = next(i for i, c in enumerate(BODIES) if isinstance(body, c))
        out.append(bytes([index]) + body.to_bytes())  # type: ignore[attr-defined]
    header = wire.sign_request(key, b"alice", 1, "POST", "/v1/x", b"", 1_767_225_600, rng)
    out.append(b"\xff" + header.encode())
    out += [b"\x0b\xa1\x00\x18\x01", b"\x0b\xbf\x00\x01\xff", b"\x0b\xa2\x00\x01\x01\x9f\xff",
            b"\x0f\xa2\x00\x01\x01\x81\x81\x40", b"\x0b\xa2\x01\x80\x00\x01"]  # fmt: skip
    return out


if __name__ == "__main__":
    target = CORPUS / "wire"
    target.mkdir(parents=True, exist_ok=True)
    for data in seeds():
        (target / f"seed-{hashlib.sha1(data).hexdigest()}").write_bytes(data)  # noqa: S324
    print(f"wrote {len(seeds())} seeds to {target}")
