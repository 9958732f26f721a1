"""The shop data contract's tables and columns, named once (see docs/data.md)."""
from __future__ import annotations

from dataclasses import dataclass

TABLE_NAMES = ("items", "users", "events")

# items
ITEM_ID = "item_id"
TITLE = "title"
DESCRIPTION = "description"
BRAND = "brand"
CATEGORIES = "categories"
PRICE = "price"
IN_STOCK = "in_stock"
CREATED_AT = "created_at"
# users
USER_ID = "user_id"
# events (also USER_ID, ITEM_ID)
EVENT_TYPE = "event_type"
VALUE = "value"
QUERY = "query"
SESSION_ID = "session_id"
TIMESTAMP = "timestamp"
EVENT_ID = "event_id"           # optional client idempotency key (serving/events, docs/data.md)

CATEGORY_SEPARATOR = " > "
VIEW, CLICK, ADD_TO_CART, PURCHASE, RATING, SEARCH = (
    "view", "click", "add_to_cart", "purchase", "rating", "search")
EVENT_TYPES = (VIEW, CLICK, ADD_TO_CART, PURCHASE, RATING, SEARCH)
ENGAGEMENT_TYPES = (CLICK, ADD_TO_CART, PURCHASE, RATING)   # "view" is an impression
QUANTITY_TYPES = (ADD_TO_CART, PURCHASE)                     # value = quantity, default 1
RATING_RANGE = (1.0, 5.0)
SESSION_GAP_SECONDS = 30 * 60   # empty session_id: a user's events split at gaps longer than this

# Longest accepted text value per column, in characters (after trimming; see docs/data.md
# "Lengths"). A longer value is a bad row (reason code "too_long"), in a shop export and in
# POST /v1/events alike, so nothing stored or answered can carry an unbounded string (one
# 900 kB search query once made a single recommendation answer 45.9 MB). Chosen well above
# real data: the Amazon Beauty catalog's longest title has 841 characters, brand 148,
# category path 98; the sample shop's longest description 266.
MAX_ID_CHARS = 256              # user_id, item_id, session_id
MAX_QUERY_CHARS = 500           # also the API's default max_query_chars for /v1/search
# An event_id is stored with its event and indexed per user (the event stores' duplicate
# check), so it is capped lower than other ids: a UUID has 36 characters, a ULID 26.
MAX_EVENT_ID_CHARS = 128
MAX_CHARS = {
    USER_ID: MAX_ID_CHARS, ITEM_ID: MAX_ID_CHARS, SESSION_ID: MAX_ID_CHARS,
    EVENT_ID: MAX_EVENT_ID_CHARS, QUERY: MAX_QUERY_CHARS,
    TITLE: 1_000, BRAND: 256, CATEGORIES: 1_000, DESCRIPTION: 10_000,
}


def top_category(path: str) -> str:
    """First level of a category path ("" if none): "Beauty > Makeup" -> "Beauty"."""
    return path.split(CATEGORY_SEPARATOR, 1)[0].strip() if path else ""


@dataclass(frozen=True)
class TableSpec:
    """Columns of one table: which must be present, which may be, and the canonical order."""

    name: str
    required_file: bool
    required: tuple[str, ...]
    optional: tuple[str, ...]
    free_columns: bool = False      # users: any other column is a free attribute

    @property
    def allowed(self) -> tuple[str, ...]:
        """Every column this table may have (besides free attributes)."""
        return self.required + self.optional


ITEMS = TableSpec("items", True, (ITEM_ID, TITLE, PRICE),
                  (DESCRIPTION, BRAND, CATEGORIES, IN_STOCK, CREATED_AT))
USERS = TableSpec("users", False, (USER_ID,), (), free_columns=True)
EVENTS = TableSpec("events", True, (USER_ID, ITEM_ID, EVENT_TYPE, TIMESTAMP),
                   (VALUE, QUERY, SESSION_ID, EVENT_ID))
TABLES = {spec.name: spec for spec in (ITEMS, USERS, EVENTS)}

# Canonical column order of the frames load_shop returns. The events frame has EVENT_ID as
# an eighth column only when the file has that column (training does not use it; the event
# stores do, to drop events they already hold).
ITEM_COLUMNS = (ITEM_ID, TITLE, DESCRIPTION, BRAND, CATEGORIES, PRICE, IN_STOCK, CREATED_AT)
EVENT_COLUMNS = (USER_ID, ITEM_ID, EVENT_TYPE, VALUE, QUERY, SESSION_ID, TIMESTAMP)
