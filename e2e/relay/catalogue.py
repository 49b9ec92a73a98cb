"""The relay's template catalogue (SPEC.md §17.1): registration and the platform's review,
the public catalogue, the operator's approval, and the gate a template message passes.

A mixin of :class:`~e2e.relay.service.RelayService`; its handlers run in the request's
transaction like every other. The relay sees a template message's reference (envelope
metadata) and never its content: approval and the price by category are decided from the
reference alone.
"""

from __future__ import annotations

from collections.abc import Callable

from e2e.errors import DecodeError, NotAllowed, UnapprovedTemplate, UnknownAccount
from e2e.platform.policy import MessageClass, PolicyConfig, Template
from e2e.platform.templates import (
    CatalogueEntry,
    Category,
    ParamType,
    TemplateSpec,
    TemplateState,
    parse_ref,
    review,
    spec_of,
)
from e2e.platform.wire import (
    MAX_CATALOGUE,
    Catalogue,
    CatalogueAnswer,
    ListCatalogue,
    RegisterCatalogue,
)
from e2e.relay.store import BUSINESS, Account, Caller, RelayStore, Tx, account_of

__all__ = ["CatalogueHandlers", "entries"]


def entries(tx: Tx, business: bytes) -> list[CatalogueEntry]:
    """Every template version of ``business`` in its store rows."""
    return [
        CatalogueEntry(
            TemplateSpec(name, lang, Category(cat), text, tuple(ParamType(p) for p in params)),
            version,
            TemplateState(state),
            reason,
        )  # fmt: skip
        for name, lang, version, cat, text, params, state, reason in tx.catalogue(business)
    ]


class CatalogueHandlers:
    """Catalogue registration and listing, the operator's review, the template gate."""

    store: RelayStore
    config: PolicyConfig
    clock: Callable[[], int]

    def register_catalogue(self, tx: Tx, caller: Caller, req: RegisterCatalogue) -> CatalogueAnswer:
        """Register a template version: the same (name, language, category, text, parameter
        types) as a held version answers that version; anything else under the name and
        language is the next version, reviewed at once (:func:`~e2e.platform.templates.review`)
        and kept with its state."""
        if account_of(tx, caller[0]).kind != BUSINESS:
            raise NotAllowed("only businesses register templates")
        spec = spec_of(req.name, req.language, req.category, req.text, req.params)
        tx.lock_chat(caller[0], b"\x00catalogue")  # one registration per business at a time
        held = entries(tx, caller[0])
        for e in held:
            if e.spec == spec:
                return CatalogueAnswer(e.version, int(e.state), e.reason.encode())
        if len(held) >= MAX_CATALOGUE:
            raise NotAllowed("too many template versions")
        same = [
            e.version for e in held if (e.spec.name, e.spec.language) == (spec.name, spec.language)
        ]
        version = 1 + max(same, default=0)
        state, reason = review(spec)
        row = (spec.name, spec.language, version, int(spec.category), spec.text,
               bytes(spec.params), int(state), reason)  # fmt: skip
        tx.insert_catalogue(caller[0], row, self.clock())
        return CatalogueAnswer(version, int(state), reason.encode())

    def list_catalogue(self, tx: Tx, caller: Caller, req: ListCatalogue) -> Catalogue:
        """A business's catalogue, every version with its state (public: the customers'
        devices check template messages against it)."""
        if account_of(tx, req.business).kind != BUSINESS:
            raise NotAllowed("only businesses have templates")
        held = entries(tx, req.business)
        return Catalogue(
            tuple(e.spec.name.encode() for e in held),
            tuple(e.spec.language.encode() for e in held),
            tuple(e.version for e in held),
            tuple(int(e.spec.category) for e in held),
            tuple(int(e.state) for e in held),
            tuple(e.spec.text.encode() for e in held),
            tuple(bytes(e.spec.params) for e in held),
        )

    def set_template_state(self, business: bytes, ref: bytes, state: TemplateState,
                           reason: str = "") -> None:  # fmt: skip
        """(Operator) approve or reject one template version by hand."""
        parsed = parse_ref(ref)
        if parsed is None:
            raise DecodeError("not a template reference (name.language.version)")

        def step(tx: Tx) -> None:
            if not tx.set_catalogue_state(business, *parsed, int(state), reason):
                raise UnknownAccount("no such template version")

        self.store.run(step)

    def catalogue_templates(self, tx: Tx, business: bytes) -> dict[bytes, Template]:
        """The business's catalogue versions as :class:`~e2e.platform.policy.Template` by
        reference, for the class check of a report."""
        return {
            e.ref: Template(e.ref, e.spec.category.cls, e.text_hash, e.spec)
            for e in entries(tx, business)
        }

    def template_gate(self, tx: Tx, src: Account, template_id: bytes | None, cls: MessageClass,
                      in_window: bool) -> int | None:  # fmt: skip
        """The relay's check of a business's template or marketing message, from its metadata
        (SPEC §17.1): outside the window it must name an approved catalogue version (or a
        template registered the older way, SPEC §10.4), and a catalogue version must be sent
        as its category's class. Returns the catalogue category to bill by (None: not a
        catalogue template). Refusals: :class:`~e2e.errors.UnapprovedTemplate`."""
        if src.kind != BUSINESS or cls not in (MessageClass.TEMPLATE, MessageClass.MARKETING):
            return None
        parsed = parse_ref(template_id) if template_id is not None else None
        if parsed is None:
            if template_id is None and not in_window:
                raise UnapprovedTemplate("outside the window a template message names a template")
            return None  # a template id of the older kind: checked by _check_template
        found = tx.catalogue_version(src.name, *parsed)  # one row: the per-message path
        if found is None:
            raise UnapprovedTemplate("no such template in the business's catalogue")
        category, state = Category(found[0]), TemplateState(found[1])
        if category.cls is not cls:
            raise UnapprovedTemplate("template sent as another class than its category's")
        if state is not TemplateState.APPROVED and not in_window:
            raise UnapprovedTemplate(f"template {state.name.lower()}: not approved")
        return int(category)
