"""The relay's configuration (SPEC.md §10.9): a TOML file and environment variables, checked
at start.

One :class:`RelayConfig` of sections (:class:`Edge`, :class:`Rate`, :class:`Policy`,
:class:`Prices`, :class:`Tiers`, :class:`Mailbox`, :class:`Admission`, :class:`Limits`,
:class:`Ops`, :class:`Ads`), each a frozen dataclass whose fields carry their default, unit
and allowed range. :func:`load` reads
``[section] name = value`` from the file, then ``E2E_RELAY_<SECTION>_<NAME>`` from the
environment (which wins; a list such as ``tiers.limits`` is written ``250,1000`` there), and
refuses anything it does not know or cannot use with a
:class:`~e2e.errors.ConfigError` naming the field (``edge.header_timeout: ...``);
``python -m e2e relay serve`` then exits with status 2. Nothing is read later: a running
relay's configuration is the one it started with.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from e2e.errors import ConfigError, InvalidKey
from e2e.platform.adentry import entry_verifier
from e2e.platform.policy import WINDOW_SECONDS, PolicyConfig, PriceTable
from e2e.platform.tiers import TierConfig
from e2e.platform.wire import MAX_REQUEST_BYTES, MAX_WAIT_MS
from e2e.relay.store import Quota

__all__ = [
    "ENV_PREFIX",
    "Edge",
    "Rate",
    "Policy",
    "Prices",
    "Tiers",
    "Mailbox",
    "Admission",
    "Limits",
    "Ops",
    "Ads",
    "RelayConfig",
    "load",
]

#: Environment variables ``E2E_RELAY_<SECTION>_<NAME>`` set a field; ``E2E_RELAY_CONFIG``
#: names the file.
ENV_PREFIX: Final = "E2E_RELAY_"

_MIB: Final = 1024 * 1024


def setting(default: Any, lo: float | None = None, hi: float | None = None,
            doc: str = "", *, secret: bool = False) -> Any:  # fmt: skip
    """A configuration field: its default, its allowed range (inclusive) and what it is;
    a ``secret`` one (a bearer token) stays out of the config's repr."""
    return field(default=default, repr=not secret, metadata={"lo": lo, "hi": hi, "doc": doc})


@dataclass(frozen=True, slots=True)
class Edge:
    """The HTTP front (:mod:`e2e.relay.edge`): what an unauthenticated client can hold."""

    header_timeout: float = setting(10.0, 0.05, 300, "s to receive a request's headers")
    body_timeout: float = setting(10.0, 0.05, 300, "s of silence allowed while a body is read")
    body_deadline: float = setting(60.0, 0.1, 3600, "s to receive a whole body")
    keep_alive: float = setting(5.0, 0.1, 300, "s an idle connection is kept between requests")
    max_header_bytes: int = setting(16_384, 1024, _MIB, "bytes of request line and headers")
    max_headers: int = setting(32, 4, 1000, "header lines per request")
    max_body: int = setting(MAX_REQUEST_BYTES, 4096, MAX_REQUEST_BYTES, "bytes of one body")
    max_inflight_bytes: int = setting(256 * _MIB, 4096, 2**40,
                                      "body bytes being read at once, all requests")  # fmt: skip
    max_connections: int = setting(4096, 1, 1_000_000, "open connections")
    max_connections_per_address: int = setting(256, 1, 1_000_000,
                                               "open connections from one IP address")  # fmt: skip
    max_long_polls: int = setting(2048, 0, 1_000_000, "fetches waiting for mail at once")
    max_long_polls_per_device: int = setting(2, 1, 64, "waiting fetches of one device")
    max_wait_ms: int = setting(MAX_WAIT_MS, 0, MAX_WAIT_MS, "longest long-poll, ms")
    shutdown_seconds: float = setting(1.5, 0.1, 60, "s a stopping relay waits for requests")
    backlog: int = setting(4096, 16, 65_535, "listen backlog")


@dataclass(frozen=True, slots=True)
class Rate:
    """The per-device request rate (:class:`~e2e.relay.ratelimit.RateLimit`)."""

    rate: float = setting(200.0, 0.001, 1e6, "requests/s per device, all relay processes")
    burst: float = setting(400.0, 1, 1e7, "burst per device")
    lease: int = setting(0, 0, 1_000_000, "tokens a process takes at once (0: burst/8, ≤ rate/10)")


@dataclass(frozen=True, slots=True)
class Policy:
    """The metadata policy of SPEC §10.3."""

    window_seconds: int = setting(WINDOW_SECONDS, 60, 366 * 86_400, "service window, s")
    limited_templates: int = setting(2, 0, 1000, "templates per window to a limiting customer")


@dataclass(frozen=True, slots=True)
class Prices:
    """What an API-tier business pays per message, by class (free tier: nothing)."""

    service: int = setting(0, 0, 10**9)
    template: int = setting(40, 0, 10**9, "a template outside the window")
    template_in_window: int = setting(0, 0, 10**9)
    marketing: int = setting(80, 0, 10**9)
    utility: int = setting(30, 0, 10**9, "a utility catalogue template outside the window")
    authentication: int = setting(
        35, 0, 10**9, "an authentication catalogue template outside the window"
    )


_TIER_DEFAULT: Final = TierConfig()


@dataclass(frozen=True, slots=True)
class Tiers:
    """Messaging tiers and quality (SPEC §17.3, :class:`~e2e.platform.tiers.TierConfig`)."""

    limits: tuple[int, ...] = setting(
        _TIER_DEFAULT.limits, 1, 10**9,
        "customers a business may start conversations with per 24 h, by level, ascending"
        " (past the last level: no limit)",
    )  # fmt: skip
    medium: float = setting(
        _TIER_DEFAULT.medium, 0.0001, 1000,
        "negative events per conversation started in 7 days: MEDIUM quality",
    )  # fmt: skip
    low: float = setting(
        _TIER_DEFAULT.low, 0.0001, 1000,
        "negative events per conversation started in 7 days: LOW quality",
    )  # fmt: skip
    min_negatives: int = setting(
        _TIER_DEFAULT.min_negatives, 1, 10**9,
        "negative events in 7 days below which quality is HIGH",
    )  # fmt: skip

    def tier_config(self) -> TierConfig:
        return TierConfig(self.limits, self.medium, self.low, self.min_negatives)


@dataclass(frozen=True, slots=True)
class Mailbox:
    """Mailboxes: what one answer carries, what one device's mailbox holds, how long."""

    fetch_bytes: int = setting(2 * _MIB, 65_536, MAX_REQUEST_BYTES - 4096,
                               "bytes of deliveries in one fetch answer")  # fmt: skip
    max_messages: int = setting(10_000, 1, 10**9, "deliveries one device's mailbox holds")
    max_bytes: int = setting(256 * _MIB, _MIB, 2**40, "bytes one device's mailbox holds")
    sender_messages: int = setting(2_000, 1, 10**9,
                                   "deliveries from one sender account in one mailbox")  # fmt: skip
    sender_bytes: int = setting(64 * _MIB, _MIB, 2**40,
                                "bytes from one sender account in one mailbox")  # fmt: skip
    retention_seconds: int = setting(30 * 86_400, 60, 10 * 366 * 86_400,
                                     "an unfetched delivery is deleted after, s")  # fmt: skip

    def quota(self) -> Quota:
        return Quota(self.max_messages, self.max_bytes, self.sender_messages, self.sender_bytes)


@dataclass(frozen=True, slots=True)
class Admission:
    """Who may register accounts, and how fast (SPEC §10.13): per client address (IPv4, or an
    IPv6 /64; each relay process counts its own) and in all (every process); and how often
    one address may fetch provisioning grants and recovery data (no device signs those)."""

    address_per_hour: float = setting(60.0, 0.01, 1e7, "accounts one address registers, per hour")
    address_burst: int = setting(20, 1, 1_000_000, "accounts one address registers at once")
    fetch_per_hour: float = setting(14_400.0, 0.01, 1e7,
                                    "provisioning/recovery fetches of one address, /h")  # fmt: skip
    fetch_burst: int = setting(240, 1, 1_000_000,
                               "provisioning/recovery fetches of one address at once")  # fmt: skip
    per_hour: float = setting(36_000.0, 0.01, 1e9, "accounts registered per hour, in all")
    burst: int = setting(1000, 1, 10**9, "accounts registered at once, in all")
    business_tier: int = setting(1, -1, 1, "billing tier of a new business (0 free, 1 API;"
                                 " -1: as it declares, for tests only)")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-account and per-device limits."""

    prekey_pool: int = setting(1000, 10, 100_000, "unclaimed one-time prekeys a device holds")
    receipt_bytes: int = setting(8192, 1024, MAX_REQUEST_BYTES, "bytes of a receipt's envelope")
    devices_per_account: int = setting(6, 1, 1000, "devices one account registers")
    claims_per_hour: float = setting(30.0, 0.01, 1e7,
                                     "prekeys one account claims of another, per hour")  # fmt: skip
    claim_burst: int = setting(30, 1, 100_000, "prekeys one account claims of another at once")
    device_claims_per_hour: float = setting(200.0, 0.01, 1e7,
                                            "one-time prekeys claimed of a device, /h")  # fmt: skip
    device_claim_burst: int = setting(200, 1, 100_000,
                                      "one-time prekeys of a device claimed at once")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Ads:
    """Ad entry points (SPEC §17.4)."""

    entry_key: str = setting("", doc="the ad service's Ed25519 public key, hex (none: entry"
                             " tokens are refused)")  # fmt: skip
    entry_window_seconds: int = setting(72 * 3600, 60, 366 * 86_400,
                                        "free window an ad's entry opens, s")  # fmt: skip
    token_seconds: int = setting(7 * 86_400, 60, 366 * 86_400,
                                 "most an entry token may still live when shown, s")  # fmt: skip
    bucket_seconds: int = setting(3600, 60, 7 * 86_400, "time bucket of a reported conversion, s")
    report_token: str = setting("", doc="bearer token GET /v1/ads/conversions asks for (none:"
                                " not served)", secret=True)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Ops:
    """Operations."""

    workers: int = setting(8, 1, 256, "store worker threads")
    pg_writers: int = setting(2, 1, 32, "PostgreSQL writer connections per relay process")
    pg_timeout: float = setting(10.0, 0.5, 600, "s a PostgreSQL operation may take (then 503)")
    pg_affinity: bool = setting(True, doc="a submission runs on its recipient's PostgreSQL writer"
                                " (false: requests go round the writers)")  # fmt: skip
    upkeep_seconds: float = setting(60.0, 0.05, 3600, "s between purges of expired records")
    metrics_token: str = setting("", doc="bearer token /v1/metrics asks for (none: no metrics)",
                                 secret=True)  # fmt: skip


@dataclass(frozen=True, slots=True)
class RelayConfig:
    """Every setting of a relay process."""

    edge: Edge = field(default_factory=Edge)
    rate: Rate = field(default_factory=Rate)
    policy: Policy = field(default_factory=Policy)
    prices: Prices = field(default_factory=Prices)
    tiers: Tiers = field(default_factory=Tiers)
    mailbox: Mailbox = field(default_factory=Mailbox)
    admission: Admission = field(default_factory=Admission)
    limits: Limits = field(default_factory=Limits)
    ops: Ops = field(default_factory=Ops)
    ads: Ads = field(default_factory=Ads)

    def policy_config(self) -> PolicyConfig:
        """The policy rules' configuration (:class:`~e2e.platform.policy.PolicyConfig`)."""
        return PolicyConfig(
            PriceTable(**_as_dict(self.prices)),  # the same fields
            self.policy.window_seconds,
            self.policy.limited_templates,
            self.tiers.tier_config(),
        )

    def replace(self, section: str, **values: Any) -> RelayConfig:
        """A copy with some fields of one section changed (checked as :func:`load` does)."""
        current = getattr(self, section)
        return _checked(dataclasses.replace(self, **{section: _section(
            type(current), section, {**_as_dict(current), **values})}))  # fmt: skip


def _as_dict(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


#: Most entries of a list setting (``tiers.limits``).
MAX_LIST: Final = 16


def _coerce_list(value: Any, name: str, from_env: bool) -> tuple[int, ...]:
    """A list of integers: a TOML array, or ``1,2,3`` in the environment."""
    if from_env:
        try:
            items: list[Any] = [int(v) for v in value.split(",")]
        except ValueError:
            raise ConfigError(f"{name}: not a list of integers: {value!r}") from None
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise ConfigError(f"{name}: must be a list of integers, not {type(value).__name__}")
    if not 1 <= len(items) <= MAX_LIST:
        raise ConfigError(f"{name}: must have 1 to {MAX_LIST} entries, not {len(items)}")
    if any(type(v) is not int for v in items):
        raise ConfigError(f"{name}: must be a list of integers")
    return tuple(items)


def _coerce(value: Any, kind: type, name: str, from_env: bool) -> Any:
    if kind is tuple:
        return _coerce_list(value, name, from_env)
    if from_env:
        try:
            if kind is bool:
                if value.lower() not in ("0", "1", "true", "false"):
                    raise ValueError
                return value.lower() in ("1", "true")
            return kind(value)
        except ValueError:
            raise ConfigError(f"{name}: not a {kind.__name__}: {value!r}") from None
    if kind is float and type(value) is int:
        return float(value)
    if type(value) is not kind:
        raise ConfigError(f"{name}: must be a {kind.__name__}, not {type(value).__name__}")
    return value


_TYPES: Final = {"int": int, "float": float, "bool": bool, "str": str, "tuple[int, ...]": tuple}


def _section(cls: type, section: str, values: Mapping[str, Any],
             env: frozenset[str] = frozenset()) -> Any:  # fmt: skip
    known = {f.name: f for f in dataclasses.fields(cls)}
    kw = {}
    for key, value in values.items():
        name = f"{section}.{key}"
        f = known.get(key)
        if f is None:
            raise ConfigError(f"{name}: no such setting")
        kind = _TYPES[f.type] if isinstance(f.type, str) else f.type
        v = _coerce(value, kind, name, key in env)
        lo, hi = f.metadata["lo"], f.metadata["hi"]
        if kind in (int, float) and v != v:  # NaN
            raise ConfigError(f"{name}: not a number")
        for item in v if kind is tuple else (v,):
            if lo is not None and item < lo:
                raise ConfigError(f"{name}: must be at least {lo}, not {item}")
            if hi is not None and item > hi:
                raise ConfigError(f"{name}: must be at most {hi}, not {item}")
        kw[key] = v
    return cls(**kw)


def _checked(config: RelayConfig) -> RelayConfig:
    """Rules across fields."""
    if config.rate.lease and config.rate.lease > config.rate.burst:
        raise ConfigError("rate.lease: must be at most rate.burst")
    if config.edge.max_body > config.edge.max_inflight_bytes:
        raise ConfigError("edge.max_inflight_bytes: must be at least edge.max_body")
    for name, token in (("ops.metrics_token", config.ops.metrics_token),
                        ("ads.report_token", config.ads.report_token)):  # fmt: skip
        if token and (len(token) < 16 or not token.isascii() or not token.isprintable()):
            raise ConfigError(f"{name}: must be at least 16 printable ASCII characters")
    ads = config.ads
    if ads.entry_key:
        try:
            entry_verifier(bytes.fromhex(ads.entry_key))
        except (ValueError, InvalidKey):
            raise ConfigError("ads.entry_key: must be an Ed25519 public key in hex (64 digits)"
                              ) from None  # fmt: skip
    if ads.entry_window_seconds <= config.policy.window_seconds:
        raise ConfigError("ads.entry_window_seconds: must be longer than policy.window_seconds")
    t = config.tiers
    if any(a >= b for a, b in zip(t.limits, t.limits[1:], strict=False)):
        raise ConfigError("tiers.limits: must be ascending, each level above the one before")
    if t.medium > t.low:
        raise ConfigError("tiers.medium: must be at most tiers.low")
    m = config.mailbox
    if m.sender_messages > m.max_messages or m.sender_bytes > m.max_bytes:
        raise ConfigError("mailbox.sender_messages: a sender's share must be within the mailbox")
    return config


_SECTIONS: Final[dict[str, type]] = {
    "edge": Edge, "rate": Rate, "policy": Policy, "prices": Prices, "tiers": Tiers,
    "mailbox": Mailbox,
    "admission": Admission, "limits": Limits, "ops": Ops, "ads": Ads,
}  # fmt: skip


def load(path: str | None = None, environ: Mapping[str, str] | None = None) -> RelayConfig:
    """The configuration from the TOML file at ``path`` (none: defaults) and ``environ``
    (default ``os.environ``): :class:`~e2e.errors.ConfigError` naming the first field that is
    unknown, of the wrong type or out of range."""
    environ = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    if path:
        try:
            with open(path, "rb") as fh:
                raw = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"cannot read the configuration file: {type(exc).__name__}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"configuration file is not TOML: {exc}") from None
    for name, value in raw.items():
        if name not in _SECTIONS:
            raise ConfigError(f"{name}: no such section")
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: must be a [section]")
    out = {}
    for name in _SECTIONS:
        values = dict(raw.get(name, {}))
        env: set[str] = set()
        prefix = f"{ENV_PREFIX}{name.upper()}_"
        for var, value in environ.items():
            if var.startswith(prefix):
                key = var[len(prefix) :].lower()
                values[key] = value
                env.add(key)
        out[name] = _section(_SECTIONS[name], name, values, frozenset(env))
    return _checked(RelayConfig(**out))
