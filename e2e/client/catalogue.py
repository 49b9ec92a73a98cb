"""A business device's template catalogue (SPEC.md §17.1): registering templates, reading a
catalogue, sending a template filled with its parameters.

A mixin of :class:`~e2e.client.device.Client`.
"""

from __future__ import annotations

from collections.abc import Sequence

from e2e.client.records import Message, Profile
from e2e.client.transport import Transport
from e2e.errors import DecodeError, UnapprovedTemplate
from e2e.platform.policy import MessageClass
from e2e.platform.templates import (
    CatalogueEntry,
    Category,
    ParamType,
    TemplateContent,
    TemplateSpec,
    render,
)
from e2e.platform.tiers import Quality, TierState

__all__ = ["Catalogue"]


class Catalogue:
    """The catalogue methods of a client."""

    transport: Transport
    profile: Profile

    async def send(
        self, to: str, text: str | bytes, cls: MessageClass = MessageClass.SERVICE, *,
        template_id: bytes | None = None, message_id: bytes | None = None,
        entry: bytes | None = None,
    ) -> Message:  # fmt: skip
        raise NotImplementedError  # pragma: no cover - Client's

    async def register_catalogue(
        self, name: str, language: str, category: Category, text: str,
        params: Sequence[ParamType] = (),
    ) -> CatalogueEntry:  # fmt: skip
        """(Business) register a template in the platform's catalogue (SPEC §17.1): the same
        template again answers the version it has; another text under the name and language
        is a new version. The entry says whether the platform approved it."""
        spec = TemplateSpec(name, language, category, text, tuple(params)).checked()
        return await self.transport.register_catalogue(spec)

    async def messaging_tier(self) -> TierState:
        """(Business) this account's messaging tier and quality, as the relay keeps them
        (SPEC §17.3)."""
        got = await self.transport.tier()
        try:
            quality = Quality(got.quality)
        except ValueError:
            raise DecodeError("unknown quality") from None
        limit = None if got.limit == 0 else got.limit
        return TierState(got.level, limit, got.used, quality, got.negatives, got.started_week)

    async def catalogue(self, business: str | None = None) -> list[CatalogueEntry]:
        """A business's catalogue (default: this account's), every version with its state."""
        return await self.transport.catalogue(business or self.profile.account)

    async def send_template(self, to: str, name: str, language: str,
                            params: Sequence[str] = (), *, version: int | None = None,
                            message_id: bytes | None = None) -> Message:  # fmt: skip
        """(Business) send a catalogue template: its newest approved version (or
        ``version``) filled with ``params``, declared as its category's class, naming it in
        the envelope and carrying text and parameters inside the encrypted content. Raises
        :class:`~e2e.errors.UnapprovedTemplate` if there is no such version, and
        :class:`~e2e.errors.DecodeError` if the parameters do not fit its types."""
        held = [
            e for e in await self.catalogue()
            if (e.spec.name, e.spec.language) == (name, language)
            and (e.version == version if version is not None else e.approved)
        ]  # fmt: skip
        if not held:
            raise UnapprovedTemplate(f"no approved template {name} ({language})")
        entry = max(held, key=lambda e: e.version)
        text = render(entry.spec, tuple(params))
        body = TemplateContent(text, tuple(params)).to_bytes()
        return await self.send(to, body, entry.spec.category.cls, template_id=entry.ref,
                               message_id=message_id)  # fmt: skip
