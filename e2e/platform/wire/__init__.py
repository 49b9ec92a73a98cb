"""The relay's wire API, version 1 (SPEC.md §10.7): paths, bodies, errors and device
authentication, shared by the relay service (:mod:`e2e.relay`) and its clients
(:mod:`e2e.client.http`).

By concern:

* :mod:`~e2e.platform.wire.codec` - the body rules (canonical CBOR maps) and :class:`Body`;
* :mod:`~e2e.platform.wire.auth` - the signed ``authorization`` header;
* :mod:`~e2e.platform.wire.errors` - error codes, statuses and the error body;
* :mod:`~e2e.platform.wire.accounts` - accounts, devices and routing;
* :mod:`~e2e.platform.wire.prekeys` - the prekey directory;
* :mod:`~e2e.platform.wire.messages` - submissions and mailboxes;
* :mod:`~e2e.platform.wire.chats` - customer controls, the window, templates and the bill;
* :mod:`~e2e.platform.wire.reports` - spam and class reports;
* :mod:`~e2e.platform.wire.keylog` - the key directory and business certificates;
* :mod:`~e2e.platform.wire.blobs` - the blob store (attachments);
* :mod:`~e2e.platform.wire.catalogue` - the template catalogue and messaging tiers.

:data:`ENDPOINTS` lists every ``POST`` endpoint with its request body, its answer body and who
may call it; every name of the submodules is also a name of this package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from e2e.platform.wire import (
    accounts,
    auth,
    blobs,
    catalogue,
    chats,
    codec,
    errors,
    keylog,
    messages,
    prekeys,
    reports,
)
from e2e.platform.wire.accounts import *  # noqa: F403 - the package names every body
from e2e.platform.wire.auth import *  # noqa: F403
from e2e.platform.wire.blobs import *  # noqa: F403
from e2e.platform.wire.catalogue import *  # noqa: F403
from e2e.platform.wire.chats import *  # noqa: F403
from e2e.platform.wire.codec import *  # noqa: F403
from e2e.platform.wire.errors import *  # noqa: F403
from e2e.platform.wire.keylog import *  # noqa: F403
from e2e.platform.wire.messages import *  # noqa: F403
from e2e.platform.wire.prekeys import *  # noqa: F403
from e2e.platform.wire.reports import *  # noqa: F403

__all__ = [
    "Path",
    "Endpoint",
    "ENDPOINTS",
    "BY_PATH",
    "BY_REQUEST",
    "NO_AUTH",
    "DEVICE",
    "CERTIFIED",
    *codec.__all__,
    *auth.__all__,
    *errors.__all__,
    *accounts.__all__,
    *prekeys.__all__,
    *messages.__all__,
    *chats.__all__,
    *reports.__all__,
    *keylog.__all__,
    *blobs.__all__,
    *catalogue.__all__,
]


class Path:
    """Endpoint paths (all ``POST`` with CBOR bodies, except the ``GET`` ones noted and the
    blobs' bytes, ``PATCH`` and ``GET`` on :func:`~e2e.platform.wire.blobs.blob_path`)."""

    ACCOUNT_REGISTER: Final = "/v1/accounts/register"
    #: (Admin) delete the caller's account with its last, deleted device list.
    ACCOUNT_DELETE: Final = "/v1/accounts/delete"
    #: Linking a new device (SPEC §10.1): an admin device sends the sealed grant, the new
    #: device (no account yet, unauthenticated) fetches it.
    PROVISION_SEND: Final = "/v1/provision/send"
    PROVISION_FETCH: Final = "/v1/provision/fetch"
    #: Account recovery (SPEC §10.1): an admin device sets it, a new device (unauthenticated,
    #: proving the recovery key) fetches the sealed account key.
    RECOVERY_SET: Final = "/v1/recovery/set"
    RECOVERY_FETCH: Final = "/v1/recovery/fetch"
    DEVICE_REGISTER: Final = "/v1/devices/register"
    #: (Admin) the account's next signed device list (SPEC §10.1).
    DEVICE_PUBLISH: Final = "/v1/devices/publish"
    DEVICE_LIST: Final = "/v1/devices/list"
    #: (Business) the devices that receive one customer's chat (SPEC §10.10).
    CHAT_ROUTE: Final = "/v1/chats/route"
    #: (Business) devices that receive every routed chat, such as an archive.
    DEVICE_DESIGNATE: Final = "/v1/devices/designate"
    PREKEY_UPLOAD: Final = "/v1/prekeys/upload"
    PREKEY_COUNT: Final = "/v1/prekeys/count"
    PREKEY_CLAIM: Final = "/v1/prekeys/claim"
    MESSAGE_PRECHECK: Final = "/v1/messages/precheck"
    MESSAGE_SUBMIT: Final = "/v1/messages/submit"
    #: A message accepted before, again for devices that ask for it (SPEC §10.11).
    MESSAGE_RESEND: Final = "/v1/messages/resend"
    MAILBOX_FETCH: Final = "/v1/mailbox/fetch"
    MAILBOX_ACK: Final = "/v1/mailbox/ack"
    CHAT_CONTROL: Final = "/v1/chats/control"
    CHAT_WINDOW: Final = "/v1/chats/window"
    REPORT: Final = "/v1/reports/submit"
    BILL: Final = "/v1/billing/summary"
    #: (Business) register a template's class and text (SPEC §10.4).
    TEMPLATE_REGISTER: Final = "/v1/templates/register"
    TEMPLATE_LIST: Final = "/v1/templates/list"
    #: (Customer) report one message whose content does not fit its declared class.
    CLASS_REPORT: Final = "/v1/reports/class"
    #: Key directory (SPEC §13.4): signed tree head, proofs, entries for monitors.
    LOG_HEAD: Final = "/v1/log/head"
    LOG_LOOKUP: Final = "/v1/log/lookup"
    LOG_CONSISTENCY: Final = "/v1/log/consistency"
    LOG_ENTRIES: Final = "/v1/log/entries"
    #: The opening record of a leaf of the caller's own account (its monitor, SPEC §13.5).
    LOG_OPEN: Final = "/v1/log/open"
    BUSINESS_CERT: Final = "/v1/business/certificate"
    #: (Business) register a template in the catalogue; anyone lists one (SPEC §17.1).
    CATALOGUE_REGISTER: Final = "/v1/catalogue/register"
    CATALOGUE_LIST: Final = "/v1/catalogue/list"
    #: (Business) its messaging tier and quality (SPEC §17.3).
    BUSINESS_TIER: Final = "/v1/business/tier"
    #: (Business) its customers' blocks, limits, opt-ins and spam reports (SPEC §17.2).
    BUSINESS_NOTICES: Final = "/v1/business/notices"
    #: Open an upload of a blob (SPEC §10.12); its bytes go to ``blob_path(id)``.
    BLOB_CREATE: Final = "/v1/blobs/create"
    BLOB_STATUS: Final = "/v1/blobs/status"
    #: GET, unauthenticated: 200 with an empty Ok body once the store answers.
    HEALTH: Final = "/v1/health"
    #: GET, unauthenticated: text counters (Prometheus text format).
    METRICS: Final = "/v1/metrics"
    #: POST, unauthenticated: answers Ok doing nothing (the load bench's baseline).
    NOOP: Final = "/v1/noop"
    #: GET ``?after=<cursor>``, with ``authorization: Bearer <ads.report_token>``: the ad
    #: service's conversions (SPEC §17.4), a :class:`~e2e.platform.adentry.Conversions`.
    AD_CONVERSIONS: Final = "/v1/ads/conversions"


#: Who may call an endpoint: anyone (account registration), a registered device (its
#: signature under its registered key), or the device a body's certificate certifies.
NO_AUTH: Final = "none"
DEVICE: Final = "device"
CERTIFIED: Final = "certified"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One ``POST`` endpoint: its path, request body, answer body and caller."""

    path: str
    request: type[codec.Body]
    answer: type[codec.Body]
    auth: str = DEVICE


#: Every POST endpoint with a CBOR body, in SPEC §10.7's order (one request type each).
ENDPOINTS: Final = (
    Endpoint(Path.ACCOUNT_REGISTER, accounts.RegisterAccount, codec.Ok, NO_AUTH),
    Endpoint(Path.DEVICE_REGISTER, accounts.RegisterDevice, codec.Ok, CERTIFIED),
    Endpoint(Path.DEVICE_PUBLISH, accounts.PublishDevices, codec.Ok),
    Endpoint(Path.ACCOUNT_DELETE, accounts.DeleteAccount, codec.Ok),
    Endpoint(Path.PROVISION_SEND, accounts.ProvisionSend, codec.Ok),
    Endpoint(Path.PROVISION_FETCH, accounts.ProvisionFetch, accounts.Provisioned, NO_AUTH),
    Endpoint(Path.RECOVERY_SET, accounts.SetRecovery, codec.Ok),
    Endpoint(Path.RECOVERY_FETCH, accounts.RecoveryFetch, accounts.Recovered, NO_AUTH),
    Endpoint(Path.DEVICE_LIST, accounts.ListDevices, accounts.DeviceList),
    Endpoint(Path.CHAT_ROUTE, accounts.Route, codec.Ok),
    Endpoint(Path.DEVICE_DESIGNATE, accounts.Designate, codec.Ok),
    Endpoint(Path.PREKEY_UPLOAD, prekeys.UploadPrekeys, prekeys.PrekeyCount),
    Endpoint(Path.PREKEY_COUNT, prekeys.CountPrekeys, prekeys.PrekeyCount),
    Endpoint(Path.PREKEY_CLAIM, prekeys.ClaimPrekey, prekeys.ClaimedPrekey),
    Endpoint(Path.MESSAGE_PRECHECK, messages.Precheck, codec.Ok),
    Endpoint(Path.MESSAGE_SUBMIT, messages.Submit, messages.Receipt),
    Endpoint(Path.MESSAGE_RESEND, messages.Resend, messages.Receipt),
    Endpoint(Path.MAILBOX_FETCH, messages.Fetch, messages.Mailbox),
    Endpoint(Path.MAILBOX_ACK, messages.Ack, codec.Ok),
    Endpoint(Path.CHAT_CONTROL, chats.Control, codec.Ok),
    Endpoint(Path.CHAT_WINDOW, chats.WindowQuery, chats.WindowState),
    Endpoint(Path.REPORT, reports.SubmitReport, reports.ReportVerdict),
    Endpoint(Path.BILL, chats.BillQuery, chats.BillLines),
    Endpoint(Path.TEMPLATE_REGISTER, chats.RegisterTemplate, codec.Ok),
    Endpoint(Path.TEMPLATE_LIST, chats.ListTemplates, chats.TemplateList),
    Endpoint(Path.CLASS_REPORT, reports.SubmitClassReport, reports.ClassVerdict),
    Endpoint(Path.LOG_HEAD, keylog.LogHeadQuery, keylog.LogHead),
    Endpoint(Path.LOG_LOOKUP, keylog.LogLookup, keylog.LogEntry),
    Endpoint(Path.LOG_CONSISTENCY, keylog.LogConsistencyQuery, keylog.LogConsistency),
    Endpoint(Path.LOG_ENTRIES, keylog.LogEntriesQuery, keylog.LogEntries),
    Endpoint(Path.LOG_OPEN, keylog.LogOpen, keylog.LogEntry),
    Endpoint(Path.BUSINESS_CERT, keylog.BusinessCertQuery, keylog.BusinessCert),
    Endpoint(Path.BLOB_CREATE, blobs.CreateBlob, blobs.BlobCreated),
    Endpoint(Path.BLOB_STATUS, blobs.BlobStatusQuery, blobs.BlobState),
    Endpoint(Path.CATALOGUE_REGISTER, catalogue.RegisterCatalogue, catalogue.CatalogueAnswer),
    Endpoint(Path.CATALOGUE_LIST, catalogue.ListCatalogue, catalogue.Catalogue),
    Endpoint(Path.BUSINESS_TIER, catalogue.TierQuery, catalogue.TierInfo),
    Endpoint(Path.BUSINESS_NOTICES, catalogue.NoticeQuery, catalogue.Notices),
)
BY_PATH: Final = {e.path: e for e in ENDPOINTS}
BY_REQUEST: Final = {e.request: e for e in ENDPOINTS}
