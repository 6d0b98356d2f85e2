"""Which behavioural features are whole numbers and which are yes/no flags (issue 13).

Everything else in `definitions.FEATURES` is Float64: shares, means, amounts, and every value that
can legitimately be null (days since a last event that may never have happened, vendor facts,
consent never asked). A count is non-null by construction: no row in its view means none counted,
so the feature SQL (`views.view_sql`) coalesces it to 0; a flag coalesces to false. Kept apart from
`definitions` (which imports Feast) so the SQL builders, Spark included, read the same lists.
"""

from __future__ import annotations

from typing import Literal

Kind = Literal["int", "bool", "float"]

COUNTS: frozenset[str] = frozenset(
    {
        "loyalty_cards",
        "orders_30d",
        "orders_90d",
        "orders_365d",
        "orders_lifetime",
        "categories_bought_365d",
        "sessions_30d",
        "sessions_90d",
        "product_views_90d",
        "searches_90d",
        "cart_adds_90d",
        "wishlist_adds_90d",
        "abandoned_carts_90d",
        "contacts_90d",
        "contacts_365d",
        "complaints_365d",
        "unresolved_365d",
        "cancellation_inquiries_365d",
        "campaigns_received_365d",
        "campaigns_opened_365d",
        "campaigns_clicked_365d",
    }
)
WHOLE_DAYS: frozenset[str] = frozenset({"tenure_days"})  # every profiled customer has one: never null, never coalesced
FLAGS: frozenset[str] = frozenset({"unsubscribed_365d"})


def feature_kind(name: str) -> Kind:
    if name in COUNTS or name in WHOLE_DAYS:
        return "int"
    return "bool" if name in FLAGS else "float"
