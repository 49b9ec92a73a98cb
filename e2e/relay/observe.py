"""What an operator sees of a running relay (SPEC.md §10.9): structured logs with request ids,
and metrics in Prometheus's text format behind a bearer token.

Logs: :class:`JsonFormatter` writes one JSON object per line (``time``, ``level``, ``logger``,
``message``, and the request's fields when there is one: ``request_id``, ``method``,
``path``, ``status``, ``ms``, ``code``). A request id is 16 random hex digits the relay makes
(never one a client sent), answered in the ``x-request-id`` header, so an operator can find a
user's failed request. No line holds an account name, device id, client address, header value
or body: a request's log is what it asked for and how it ended, not who asked (SPEC §10.6).

Metrics: :class:`Metrics` counts requests by endpoint and refusals by code, and keeps a
latency histogram per endpoint (:data:`BUCKETS`); :meth:`Metrics.text` renders them with a
``# HELP`` and ``# TYPE`` line each. :func:`metrics_allowed` admits a request for them only
with ``authorization: Bearer <ops.metrics_token>`` (compared in constant time); a relay without
a token serves no metrics (401).
"""

from __future__ import annotations

import hmac
import json
import logging
import os
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Final

__all__ = ["BUCKETS", "JsonFormatter", "Metrics", "metrics_allowed", "new_request_id"]

#: Upper bounds of the latency histogram's buckets, seconds (then +Inf).
BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: The request fields a log record may carry (``extra=``), in the order they are written.
FIELDS: Final = ("request_id", "method", "path", "status", "ms", "code")


def new_request_id() -> str:
    return os.urandom(8).hex()


class JsonFormatter(logging.Formatter):
    """One JSON object per record. Only the message and :data:`FIELDS` are written: whatever
    else a record carries (its arguments' objects) is not."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                out[name] = value
        if record.exc_info and record.exc_info[0] is not None:
            out["error"] = record.exc_info[0].__name__  # the type only: no values, no frames
        return json.dumps(out, separators=(",", ":"), ensure_ascii=True)


def metrics_allowed(token: str, headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether a request's ``authorization`` header is ``Bearer <token>`` (never without a
    token)."""
    if not token:
        return False
    want = b"Bearer " + token.encode()
    for name, value in headers:
        if name == b"authorization":
            return hmac.compare_digest(value, want)
    return False


class _Histogram:
    __slots__ = ("counts", "total", "n")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds
        self.n += 1


class Metrics:
    """The relay process's counters and latency histograms (one event loop; not locked)."""

    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()
        self.latency: dict[str, _Histogram] = {}

    def observe(self, endpoint: str, seconds: float) -> None:
        """One answered request of ``endpoint`` (a handler's name, or ``other``)."""
        h = self.latency.get(endpoint)
        if h is None:
            h = self.latency[endpoint] = _Histogram()
        h.observe(seconds)

    def text(self, timers: Mapping[str, float], gauges: Mapping[str, tuple[str, float]]) -> str:
        """Prometheus text format: counters, the step timers, the latency histograms, and
        ``gauges`` (name -> (help, value))."""
        c = self.counters
        lines: list[str] = []

        def head(name: str, kind: str, text: str) -> None:
            lines.append(f"# HELP {name} {text}")
            lines.append(f"# TYPE {name} {kind}")

        def labelled(prefix: str) -> list[tuple[str, int]]:
            return sorted((k.partition(":")[2], v) for k, v in c.items() if k.startswith(prefix))

        head("e2e_relay_requests_total", "counter", "Requests accepted, by endpoint.")
        for label, value in labelled("accepted:"):
            lines.append(f'e2e_relay_requests_total{{endpoint="{label}"}} {value}')
        head("e2e_relay_refused_total", "counter", "Requests refused, by error code.")
        for label, value in labelled("refused:"):
            lines.append(f'e2e_relay_refused_total{{code="{label}"}} {value}')
        head("e2e_relay_messages_accepted_total", "counter", "Messages accepted for delivery.")
        lines.append(f"e2e_relay_messages_accepted_total {c['messages_accepted']}")
        head("e2e_relay_internal_errors_total", "counter", "Requests that failed with a bug.")
        lines.append(f"e2e_relay_internal_errors_total {c['error:internal']}")
        head("e2e_relay_long_polls_refused_total", "counter",
             "Fetches answered at once because the long-poll caps were reached.")  # fmt: skip
        lines.append(f"e2e_relay_long_polls_refused_total {c['long_poll_refused']}")
        head("e2e_relay_long_poll_fetches_total", "counter",
             "Mailbox reads by held long-polls after their first fetch.")  # fmt: skip
        lines.append(f"e2e_relay_long_poll_fetches_total {c['long_poll_fetches']}")
        head("e2e_relay_seconds_total", "counter",
             "Seconds spent in each step of the request path, summed over requests.")  # fmt: skip
        for phase, seconds in sorted(timers.items()):
            lines.append(f'e2e_relay_seconds_total{{phase="{phase}"}} {seconds:.6f}')
        head("e2e_relay_request_seconds", "histogram",
             "Seconds from a request's headers to its answer, by endpoint.")  # fmt: skip
        for endpoint, h in sorted(self.latency.items()):
            running = 0
            bounds = [*(str(b) for b in BUCKETS), "+Inf"]
            for bound, count in zip(bounds, h.counts, strict=True):
                running += count
                lines.append(f'e2e_relay_request_seconds_bucket{{endpoint="{endpoint}",'
                             f'le="{bound}"}} {running}')  # fmt: skip
            lines.append(f'e2e_relay_request_seconds_sum{{endpoint="{endpoint}"}} {h.total:.6f}')
            lines.append(f'e2e_relay_request_seconds_count{{endpoint="{endpoint}"}} {h.n}')
        for name, (about, level) in gauges.items():
            head(name, "counter" if name.endswith("_total") else "gauge", about)
            lines.append(f"{name} {level:g}")
        return "\n".join(lines) + "\n"
