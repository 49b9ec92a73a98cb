"""The business side of the platform (SPEC.md §17.2): the business API gateway.

* :mod:`e2e.business.gateway` -- the gateway: a business device with a local HTTP JSON API;
* :mod:`e2e.business.webhooks` -- its signed webhooks, one per device event, with retries;
* :mod:`e2e.business.serve` -- ``python -m e2e business gateway``.
"""

from __future__ import annotations

__all__: list[str] = []
