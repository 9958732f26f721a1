"""Erased users: a pseudonymous list the event stores keep and training exports read.

``EventStore.erase_user(user_id)`` deletes the user's events and records the erasure as
``(user_hash, erased_at, events_deleted)``, where ``user_hash`` is a keyed hash
(HMAC-SHA256, first 128 bits in hex) of the user id, never the id itself: the list proves
*that* and *when* an erasure happened and lets shoprec recognise the user's rows in a later
shop export, but read on its own (a leaked backup, an auditor's copy) it names nobody, and
without the key a guessed id ("u123") cannot be tested against it. docs/privacy.md.

The key (``erasure_key``, a secret from the operator) can be given to the store; without one
the store generates a random key once and keeps it in its own bookkeeping (meta), which is
weaker: whoever can read the whole store can test guessed ids. Either way the store records
the key's fingerprint, so a different key later is refused rather than silently failing
to match (every erased user would come back).

For a training export::

    erased = read_erasures("sqlite:///var/shoprec/events.sqlite3", erasure_key=KEY)
    events = erased.exclude(shop.events)      # drops erased users' events up to the erasure
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.contract import spec
from serving.events.errors import EventStoreError

KEY_META = "erasure_key"              # generated key (only when none is configured)
KEY_ID_META = "erasure_key_id"        # fingerprint of the key the list was written with
HASH_HEX = 32                         # 128 bits of HMAC-SHA256


class ErasureKeyError(EventStoreError):
    """The configured erasure key is not the one the store's erasure list was written with."""


@dataclass(frozen=True)
class Erasure:
    """One erasure request as recorded (no user id: its keyed hash)."""

    user_hash: str
    erased_at: int                    # epoch seconds
    events_deleted: int


def read_key_file(path: str) -> str | None:
    """The erasure key kept in the file ``path`` (surrounding whitespace removed); None for
    an empty path (the store's generated key is used)."""
    if not path:
        return None
    with open(path, encoding="utf-8") as f:
        return f.read().strip()


def as_key(key: str | bytes) -> bytes:
    """An erasure key as bytes (text keys are UTF-8); at least 16 bytes."""
    raw = key.encode("utf-8") if isinstance(key, str) else bytes(key)
    if len(raw) < 16:
        raise ValueError("an erasure key needs at least 16 bytes (e.g. `openssl rand -hex 32`)")
    return raw


def key_id(key: bytes) -> str:
    """Fingerprint of a key, safe to store next to the list (it does not reveal the key)."""
    return hashlib.sha256(b"shoprec erasure key id\0" + key).hexdigest()[:16]


def new_key() -> str:
    """A random key (64 hex characters)."""
    return secrets.token_hex(32)


def user_hash(key: bytes, user_id: str) -> str:
    """The pseudonym of a user id under a key (hex, HASH_HEX characters)."""
    digest = hmac.new(key, user_id.encode("utf-8", "surrogatepass"), hashlib.sha256)
    return digest.hexdigest()[:HASH_HEX]


@dataclass(frozen=True)
class ErasureList:
    """Who was erased and when (latest erasure per user), matchable with the key."""

    key: bytes
    erased: dict[str, int]            # user_hash -> latest erased_at

    def erased_at(self, user_id: str) -> int | None:
        """When the user was last erased, or None."""
        return self.erased.get(user_hash(self.key, user_id))

    def __contains__(self, user_id: object) -> bool:
        return isinstance(user_id, str) and self.erased_at(user_id) is not None

    def __len__(self) -> int:
        return len(self.erased)

    def erased_mask(self, events: pd.DataFrame) -> np.ndarray:
        """Bool mask: events of an erased user dated at or before that user's erasure.

        Events dated after it are new activity (the shopper came back) and are kept; an
        erasure is not an objection to future processing (docs/privacy.md).
        """
        if not self.erased or events.empty:
            return np.zeros(len(events), dtype=bool)
        users = events[spec.USER_ID]
        when = {u: self.erased_at(u) for u in users.unique()}   # hash each user once
        limit = users.map(when).to_numpy(dtype=np.float64)      # NaN: never erased
        stamps = events[spec.TIMESTAMP].to_numpy(dtype=np.float64)
        with np.errstate(invalid="ignore"):
            return stamps <= limit

    def exclude(self, events: pd.DataFrame) -> pd.DataFrame:
        """``events`` (a canonical events frame) without the erased users' events up to their
        erasure; the index is reset."""
        return events[~self.erased_mask(events)].reset_index(drop=True)


def read_erasures(store_or_url, erasure_key: str | bytes | None = None) -> ErasureList:
    """The erasure list of an event store, for a training export.

    ``store_or_url``: an open EventStore (its configured key applies) or a store URL, opened
    with ``erasure_key`` (the key the API was configured with; ``None``: the store's generated
    key) and closed again. Raises ErasureKeyError if the key is not the one the list was
    written with.
    """
    from serving.events.store import EventStore, open_event_store

    if isinstance(store_or_url, EventStore):
        return store_or_url.erasure_list()
    store = open_event_store(store_or_url, erasure_key=erasure_key)
    try:
        return store.erasure_list()
    finally:
        store.close()


def mismatch_message(recorded: str, given: str) -> str:
    """Why a configured key is refused."""
    return (f"the erasure list was written with another erasure key (fingerprint {recorded}, "
            f"the configured one is {given}); configure the original key, or erased users "
            "would not be recognised")
