"""Keyed pseudonyms of user ids: what shoprec stores and trains on instead of a shop's ids.

``Pseudonyms.from_file(path)(user_id)`` = ``"p_"`` + the first 16 bytes of
HMAC-SHA256(key, user id), hex (34 characters). The same key gives the same pseudonym in the
pipeline (examples, vocabularies, SavedModels, reports) and in the API (event store, model
requests, logs), so nothing downstream of the shop's own export holds a raw user id, and
without the key a pseudonym cannot be linked back to the shop's id (docs/privacy.md). The
key lives outside every artifact: a file of 64 hex characters, written by
``python -m pipeline.contract.pseudonym new-key FILE``. ``key_id`` (HMAC of a fixed text,
8 hex characters) names a key in reports and logs without revealing it, so a pipeline and
an API on different keys can be told apart.
"""
from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import secrets
import sys
from pathlib import Path

import pandas as pd

PREFIX = "p_"
KEY_BYTES = 32
DIGEST_BYTES = 16
PSEUDONYM_CHARS = len(PREFIX) + 2 * DIGEST_BYTES


class PseudonymKeyError(ValueError):
    """The pseudonym key file is missing or malformed; the message names the file."""


class Pseudonyms:
    """User id -> keyed pseudonym (module docstring). ``""`` (no user) stays ``""``."""

    def __init__(self, key: bytes):
        if len(key) < 16:
            raise PseudonymKeyError(f"a pseudonym key needs at least 16 bytes, got {len(key)}")
        self._key = bytes(key)
        self.key_id = hmac.new(self._key, b"shoprec pseudonym key id",
                               hashlib.sha256).hexdigest()[:8]

    @classmethod
    def from_file(cls, path) -> "Pseudonyms":
        path = Path(path)
        try:
            text = path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            raise PseudonymKeyError(f"{path}: no such pseudonym key file (create one with "
                                    f"python -m pipeline.contract.pseudonym new-key "
                                    f"{path})") from None
        except (OSError, UnicodeDecodeError) as e:
            raise PseudonymKeyError(f"{path}: cannot read the pseudonym key ({e})") from None
        try:
            key = bytes.fromhex(text)
        except ValueError:
            raise PseudonymKeyError(f"{path}: expected {2 * KEY_BYTES} hex characters on "
                                    "one line") from None
        if len(key) != KEY_BYTES:
            raise PseudonymKeyError(f"{path}: expected {2 * KEY_BYTES} hex characters, got "
                                    f"{len(text)}")
        return cls(key)

    def __call__(self, user_id: str) -> str:
        if not user_id:
            return ""
        digest = hmac.new(self._key, user_id.encode("utf-8", "surrogatepass"),
                          hashlib.sha256).digest()
        return PREFIX + digest[:DIGEST_BYTES].hex()

    def column(self, values: pd.Series) -> pd.Series:
        """A column of user ids -> their pseudonyms (each distinct id hashed once)."""
        unique = pd.unique(values)
        mapping = dict(zip(unique, (self(str(v)) for v in unique)))
        return values.map(mapping)

    def __repr__(self) -> str:           # never the key
        return f"Pseudonyms(key_id={self.key_id})"


def write_new_key(path) -> Pseudonyms:
    """Writes a new random key to ``path`` (readable by its owner only); refuses to
    overwrite an existing file (every stored pseudonym depends on the key)."""
    path = Path(path)
    if path.exists():
        raise PseudonymKeyError(f"{path}: exists; a new key would orphan every pseudonym "
                                "made with the old one")
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(KEY_BYTES)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as f:
        f.write(key.hex() + "\n")
    return Pseudonyms(key)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.contract.pseudonym",
                                     description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    new = commands.add_parser("new-key", help="write a new random key file (mode 0600)")
    new.add_argument("path")
    show = commands.add_parser("key-id", help="print the key id of a key file")
    show.add_argument("path")
    args = parser.parse_args(argv)
    try:
        if args.command == "new-key":
            print(f"wrote {args.path} (key id {write_new_key(args.path).key_id})")
        else:
            print(Pseudonyms.from_file(args.path).key_id)
    except PseudonymKeyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
