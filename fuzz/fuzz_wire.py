"""Fuzz target: the relay's request and response decoders (e2e.platform.wire).

The first byte picks a decoder (every wire body, the envelope, and the authorization header);
the rest is its input. Invariants: only E2EError on bad input; an accepted body re-encodes to
exactly its bytes (so the relay never accepts two encodings of one request).
"""

from __future__ import annotations

import sys

if __package__ in (None, ""):
    sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.dirname(__file__)))

from e2e.errors import E2EError
from e2e.platform import wire
from e2e.platform.envelope import Envelope
from fuzz._harness import main

BODIES: tuple[type, ...] = (
    wire.RegisterAccount, wire.RegisterDevice, wire.PublishDevices, wire.ListDevices,
    wire.DeviceList, wire.UploadPrekeys, wire.CountPrekeys, wire.PrekeyCount, wire.ClaimPrekey,
    wire.ClaimedPrekey, wire.Precheck, wire.Submit, wire.Receipt, wire.Fetch, wire.Mailbox,
    wire.Ack, wire.Control, wire.WindowQuery, wire.WindowState, wire.SubmitReport,
    wire.ReportVerdict, wire.BillQuery, wire.BillLines, wire.WireError, wire.Ok, Envelope,
    wire.Route, wire.Designate, wire.RegisterTemplate, wire.ListTemplates, wire.TemplateList,
    wire.SubmitClassReport, wire.ClassVerdict, wire.LogHeadQuery, wire.LogHead, wire.LogLookup,
    wire.LogEntry, wire.LogConsistencyQuery, wire.LogConsistency, wire.LogEntriesQuery,
    wire.LogEntries, wire.BusinessCertQuery, wire.BusinessCert, wire.DeleteAccount,
    wire.ProvisionSend, wire.ProvisionFetch, wire.Provisioned, wire.SetRecovery,
    wire.RecoveryFetch, wire.Recovered, wire.LogOpen,
)  # fmt: skip


def test_one_input(data: bytes) -> None:
    if not data:
        return
    pick, raw = data[0], data[1:]
    if pick == 0xFF:
        try:
            token = wire.parse_auth(raw.decode("latin-1"))
        except E2EError:
            return
        assert token.to_header() == raw.decode("latin-1"), "auth header not canonical"
        return
    cls = BODIES[pick % len(BODIES)]
    try:
        body = cls.from_bytes(raw)
    except E2EError:
        return
    if isinstance(body, wire.Precheck):
        try:
            _ = body.dests
        except E2EError:
            return
    assert body.to_bytes() == raw, f"{cls.__name__} accepted a body it does not re-encode"


if __name__ == "__main__":
    main(test_one_input, "wire")
