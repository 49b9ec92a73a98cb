"""The relay's handlers around its blob store (SPEC.md §10.12, §10.4): opening uploads and
telling their offset, the blobs an attachment message references, and a reported
attachment's blob checked against the franked pointer.

A mixin of :class:`~e2e.relay.service.RelayService`. The blob store is a store of its own
(:mod:`e2e.relay.blobs`), so its work runs after the request's transaction committed (the
pipeline's ``after`` step, once) or, where it must come before a message is accepted, inside
the transaction as an idempotent step (a retried transaction repeats it harmlessly).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

from e2e.attachment.pointer import Pointer
from e2e.errors import E2EError, NoSuchEndpoint
from e2e.platform.envelope import Envelope
from e2e.platform.franking import Report
from e2e.platform.wire import (
    BlobCreated,
    BlobState,
    BlobStatusQuery,
    CreateBlob,
    Ok,
    ReportVerdict,
    SubmitReport,
)
from e2e.relay.blobs import BlobStore
from e2e.relay.store import Caller, Tx

__all__ = ["BlobHandlers"]


class BlobHandlers:
    """Uploads' control endpoints, references by messages, reported attachments."""

    clock: Callable[[], int]

    @property
    def blobs(self) -> BlobStore:
        raise NotImplementedError

    def blob_admitted(self, tx: Tx, caller: Caller, req: Any) -> Ok:
        """The transaction of a blob request: admission only (the key, the rate, the nonce);
        the blob store's work follows in :meth:`create_blob`, :meth:`blob_status` or the
        data plane (:mod:`e2e.relay.blobio`)."""
        return Ok()

    def create_blob(self, caller: Caller, req: CreateBlob, _result: object) -> BlobCreated:
        """Open an upload owned by the caller's account (413 over the cap, 507 over the
        account's quota)."""
        blob_id = self.blobs.create(caller[0], req.length or None, self.clock())
        return BlobCreated(blob_id, self.blobs.limits.max_blob_bytes)

    def blob_status(self, caller: Caller, req: BlobStatusQuery, _result: object) -> BlobState:
        """The caller's upload's durable offset (404 unless it is the caller account's)."""
        info = self.blobs.status(req.blob_id, caller[0])
        return BlobState(info.offset, info.complete, info.length or 0)

    def forget_blobs(self, caller: Caller, _req: object, result: Ok) -> Ok:
        """After an account's deletion committed (SPEC §10.1): the blobs it uploaded and the
        grants it held go. (A relay stopped in between leaves them to the expiry of §10.12.)"""
        try:
            blobs = self.blobs
        except NoSuchEndpoint:  # a relay without a blob store
            return result
        blobs.forget(caller[0])
        return result

    def reference_blob(self, env: Envelope, now: int) -> None:
        """Inside a submission's transaction, once the policy accepted it: the message's blob
        must be complete and readable by the sender (404, the submission refused); it becomes
        referenced and readable by the recipient account. Idempotent."""
        if env.blob_id is not None:
            self.blobs.reference([env.blob_id], env.from_account, [env.to_account], now)

    def verify_attachments(
        self, caller: Caller, req: SubmitReport, verdict: ReportVerdict
    ) -> ReportVerdict:
        """After a report was verified and recorded: for each revealed attachment pointer
        (franked, so the sender's), whether the blob stored under its id has its digest, the
        blob the sender uploaded. The verdict lists the blob ids that do."""
        report = Report.from_bytes(req.report)
        verified: list[bytes] = []
        for item in report.items:
            if item.attachment is None:
                continue
            pointer = Pointer.from_bytes(item.attachment)
            try:
                info = self.blobs.readable(pointer.blob_id, report.business)
                if hmac.compare_digest(self.blobs.digest(info), pointer.digest):
                    verified.append(pointer.blob_id)
            except E2EError:
                continue  # expired, or not the franked blob: not verified
        return ReportVerdict(verdict.message_ids, verdict.received_at, verdict.classes,
                             tuple(verified))  # fmt: skip
