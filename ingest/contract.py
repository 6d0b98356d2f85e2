"""The raw first-party data contract (shared/DATA_CONTRACT.md) as code.

One place that names every raw table, its columns, which of them are required, identifiers,
timestamps, enumerations and primary keys. Ingest validates against it; the synthetic
generator writes exactly these columns. Extra columns in raw files are allowed and kept.
`required` columns must be present in a file; only `row_keys` (primary key + `essential`)
decide whether a row is quarantined. Enumerations are the usual values, not a closed list.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TableSpec:
    name: str
    columns: tuple[str, ...]
    required: tuple[str, ...]
    primary_key: tuple[str, ...]
    timestamps: tuple[str, ...] = ()
    dates: tuple[str, ...] = ()
    numbers: tuple[str, ...] = ()
    booleans: tuple[str, ...] = ()
    enums: dict[str, tuple[str, ...]] = field(default_factory=dict)
    emails: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()
    # beyond the primary key: columns a row cannot mean anything without (an event's time, an
    # order's amount). A bad value there quarantines the row; anywhere else it is a field issue.
    essential: tuple[str, ...] = ()
    # enumerations whose values are the meaning of the row (a send's randomized arm): an unknown
    # value quarantines the row; every other enumeration is open (unknown values kept)
    closed: tuple[str, ...] = ()

    @property
    def row_keys(self) -> frozenset[str]:
        """Columns whose missing or bad value quarantines the row (key + essential)."""
        return frozenset(self.primary_key) | frozenset(self.essential)


TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        TableSpec(
            "crm_contacts",
            (
                "record_id",
                "first_name",
                "last_name",
                "email",
                "phone",
                "date_of_birth",
                "address_line",
                "city",
                "postcode",
                "created_at",
                "updated_at",
            ),
            required=("record_id", "created_at"),
            primary_key=("record_id",),
            timestamps=("created_at", "updated_at"),
            dates=("date_of_birth",),
            emails=("email",),
            phones=("phone",),
        ),
        TableSpec(
            "loyalty_members",
            ("card_id", "first_name", "last_name", "email", "phone", "postcode", "enrolled_at", "tier", "status"),
            required=("card_id", "enrolled_at"),
            primary_key=("card_id",),
            timestamps=("enrolled_at",),
            enums={"tier": ("bronze", "silver", "gold", "platinum"), "status": ("active", "inactive", "closed")},
            emails=("email",),
            phones=("phone",),
        ),
        TableSpec(
            "online_accounts",
            ("account_id", "email", "first_name", "last_name", "phone", "postcode", "created_at"),
            required=("account_id", "created_at"),
            primary_key=("account_id",),
            timestamps=("created_at",),
            emails=("email",),
            phones=("phone",),
        ),
        TableSpec(
            "orders",
            (
                "order_id",
                "channel",
                "store_id",
                "ordered_at",
                "card_id",
                "phone",
                "account_id",
                "email",
                "total_amount",
                "discount_amount",
                "coupon_code",
            ),
            required=("order_id", "channel", "ordered_at", "total_amount"),
            primary_key=("order_id",),
            essential=("ordered_at", "total_amount"),
            timestamps=("ordered_at",),
            numbers=("total_amount", "discount_amount"),
            enums={"channel": ("store", "online", "app")},
            emails=("email",),
            phones=("phone",),
        ),
        TableSpec(
            "order_lines",
            ("order_id", "line_no", "product_id", "quantity", "unit_price", "discount"),
            required=("order_id", "line_no", "product_id", "quantity", "unit_price"),
            primary_key=("order_id", "line_no"),
            essential=("order_id", "quantity", "unit_price"),
            numbers=("line_no", "quantity", "unit_price", "discount"),
        ),
        TableSpec(
            "products",
            ("product_id", "name", "category", "subcategory", "brand", "price"),
            required=("product_id", "category", "price"),
            primary_key=("product_id",),
            numbers=("price",),
        ),
        TableSpec(
            "web_events",
            (
                "event_id",
                "occurred_at",
                "device_id",
                "account_id",
                "session_id",
                "event_type",
                "product_id",
                "category",
                "search_query",
            ),
            required=("event_id", "occurred_at", "event_type"),
            primary_key=("event_id",),
            essential=("occurred_at", "event_type"),
            timestamps=("occurred_at",),
            enums={
                "event_type": (
                    "page_view",
                    "product_view",
                    "search",
                    "add_to_cart",
                    "remove_from_cart",
                    "wishlist_add",
                    "checkout_start",
                )
            },
        ),
        TableSpec(
            "service_interactions",
            (
                "interaction_id",
                "occurred_at",
                "channel",
                "reason",
                "resolved",
                "sentiment",
                "handle_seconds",
                "phone",
                "email",
                "account_id",
                "card_id",
            ),
            required=("interaction_id", "occurred_at", "channel", "reason"),
            primary_key=("interaction_id",),
            essential=("occurred_at",),
            timestamps=("occurred_at",),
            numbers=("sentiment", "handle_seconds"),
            booleans=("resolved",),
            enums={
                "channel": ("call", "email", "chat"),
                "reason": ("inquiry", "complaint", "billing", "delivery", "cancellation", "product_question"),
            },
            emails=("email",),
            phones=("phone",),
        ),
        TableSpec(
            "campaigns",
            ("campaign_id", "name", "channel", "start_at", "end_at", "objective", "target_category"),
            required=("campaign_id", "channel", "start_at", "end_at"),
            primary_key=("campaign_id",),
            essential=("start_at", "end_at"),
            timestamps=("start_at", "end_at"),
            enums={"channel": ("email", "sms", "push", "paid_display")},
        ),
        TableSpec(
            "marketing_sends",
            ("send_id", "campaign_id", "sent_at", "group", "email", "account_id", "device_id"),
            required=("send_id", "campaign_id", "sent_at", "group"),
            primary_key=("send_id",),
            essential=("campaign_id", "sent_at", "group"),
            closed=("group",),
            timestamps=("sent_at",),
            enums={"group": ("treatment", "control")},
            emails=("email",),
        ),
        TableSpec(
            "marketing_responses",
            ("send_id", "event_type", "occurred_at"),
            required=("send_id", "event_type", "occurred_at"),
            primary_key=(),
            essential=("send_id", "event_type", "occurred_at"),
            timestamps=("occurred_at",),
            enums={"event_type": ("delivered", "opened", "clicked", "unsubscribed", "bounced")},
        ),
        TableSpec(
            "enrichment",
            (
                "vendor",
                "as_of",
                "email_sha256",
                "postcode",
                "household_size",
                "income_band",
                "life_stage",
                "home_owner",
                "car_owner",
            ),
            required=("vendor", "as_of", "email_sha256"),
            primary_key=(),
            essential=("as_of", "email_sha256"),
            timestamps=("as_of",),
            numbers=("household_size",),
            booleans=("home_owner", "car_owner"),
        ),
        TableSpec(
            "consent_events",
            ("event_id", "occurred_at", "identifier", "identifier_type", "purpose", "granted", "source"),
            required=("event_id", "occurred_at", "identifier", "identifier_type", "purpose", "granted"),
            primary_key=("event_id",),
            essential=("occurred_at", "identifier", "identifier_type", "purpose", "granted"),
            timestamps=("occurred_at",),
            booleans=("granted",),
            enums={
                "identifier_type": ("email", "phone", "account_id", "card_id"),
                "purpose": ("email_marketing", "sms_marketing", "profiling", "third_party_sharing"),
            },
        ),
    )
}

# values that identify or describe a person: field issues show their shape only ('99/99/9999')
PERSONAL_COLUMNS = frozenset(
    {"first_name", "last_name", "email", "phone", "date_of_birth", "address_line", "city", "postcode", "identifier"}
)

CONSENT_PURPOSES = TABLES["consent_events"].enums["purpose"]
