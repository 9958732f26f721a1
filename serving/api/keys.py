"""API keys: the keys file, its hashes, reloading it when it changes, and a command line.

    python -m serving.api.keys new --name shopfront --roles public [--rate 100/200]
        [--append FILE]
    python -m serving.api.keys check FILE

A keys file has one key per line, ``NAME ROLES HASH [rate=RATE/BURST]``, separated by
spaces; ``#`` starts a comment::

    # name      roles             hash of the secret                    optional
    shopfront   public            sha256:5e8f...(64 hex digits)
    ingest      events            sha256:0b1c...
    ops         operator,public   sha256:9a7d...                        rate=5/10

Roles: ``public`` (recommend, search, similar), ``events`` (POST /v1/events), ``operator``
(/metrics, /readyz detail, the ``context`` of a recommendation). A key has exactly the roles
it lists. The file holds only SHA-256 hashes of the secrets (why not a slow hash:
docs/security.md); the API compares them in constant time and re-reads the file when it
changes (inode, mtime or size), so keys rotate without a restart; a changed file that does
not parse is refused (logged, counted) and the keys read before stay in use.
"""
from __future__ import annotations

import argparse
import hashlib
import hmac
import logging
import os
import re
import secrets
import sys
import tempfile
from dataclasses import dataclass
from typing import Callable

from serving.api.limits import Rate, parse_rate
from serving.api.settings import Settings, SettingsError

log = logging.getLogger(__name__)

PUBLIC, EVENTS, OPERATOR = "public", "events", "operator"
ROLES = (PUBLIC, EVENTS, OPERATOR)
SECRET_PREFIX = "shoprec_"
MAX_SECRET_CHARS = 256       # longer credentials are not keys: refused without hashing
HASH_PREFIX = "sha256:"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
HASH = re.compile(r"sha256:[0-9a-f]{64}")


class KeysFileError(SettingsError):
    """The keys file cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class ApiKey:
    """One line of the keys file (``rate`` None: the roles' limits apply)."""

    name: str
    roles: frozenset[str]
    hash: str
    rate: Rate | None = None
    unlimited: bool = False      # rate=unlimited

    def line(self) -> str:
        rate = " rate=unlimited" if self.unlimited else f" rate={self.rate}" if self.rate else ""
        return f"{self.name} {','.join(r for r in ROLES if r in self.roles)} {self.hash}{rate}"


def hash_secret(secret: str) -> str:
    """``sha256:<hex>`` of the secret's UTF-8 bytes (the secret is 256 random bits)."""
    return HASH_PREFIX + hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def new_secret() -> str:
    """A new key: ``shoprec_`` + 32 random bytes, URL-safe base64 (43 characters)."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def parse_roles(text: str) -> frozenset[str]:
    roles = [r.strip() for r in text.split(",")]
    unknown = [r for r in roles if r not in ROLES]
    if unknown or not roles:
        raise ValueError(f"unknown role {unknown[0]!r}; roles are {', '.join(ROLES)} "
                         "(comma-separated, no spaces)")
    return frozenset(roles)


def parse_line(line: str) -> ApiKey | None:
    """One line of a keys file -> ApiKey (None for blank and comment lines);
    ValueError says what is wrong."""
    fields = line.split("#", 1)[0].split()
    if not fields:
        return None
    if len(fields) < 3:
        raise ValueError("expected NAME ROLES sha256:HEX [rate=RATE/BURST]")
    name, roles, digest, *options = fields
    if not NAME.fullmatch(name):
        raise ValueError(f"name {name[:80]!r}: 1-64 letters, digits or _.@- (starting with "
                         "a letter or digit)")
    if not HASH.fullmatch(digest):
        hint = " (that looks like a secret: the file holds its hash, see `python -m " \
               "serving.api.keys new`)" if digest.startswith(SECRET_PREFIX) else ""
        raise ValueError(f"hash: expected sha256: and 64 lowercase hex digits{hint}")
    rate, unlimited = None, False
    for option in options:
        key, equals, value = option.partition("=")
        if key != "rate" or not equals:
            raise ValueError(f"unknown option {option[:80]!r} (only rate=RATE/BURST)")
        rate = parse_rate(value)
        unlimited = rate is None
    return ApiKey(name, parse_roles(roles), digest, rate, unlimited)


def parse_keys(text: str, source: str) -> tuple[ApiKey, ...]:
    """Every key of a keys file's text; KeysFileError names the line and what is wrong."""
    keys, names = [], {}
    for number, line in enumerate(text.splitlines(), 1):
        try:
            key = parse_line(line)
        except ValueError as e:
            raise KeysFileError(f"{source} line {number}: {e}") from None
        if key is None:
            continue
        if key.name in names:
            raise KeysFileError(f"{source} line {number}: name {key.name!r} already used on "
                                f"line {names[key.name]} (names must be unique)")
        names[key.name] = number
        keys.append(key)
    if not keys:
        raise KeysFileError(f"{source}: no key in the file (a file being written or emptied "
                            "by mistake is refused; to revoke every key, stop the API)")
    return tuple(keys)


def read_keys_file(path: str) -> tuple[tuple[ApiKey, ...], tuple]:
    """(keys, file signature) of the keys file at ``path``; KeysFileError if unusable."""
    try:
        with open(path, "rb") as f:
            stat = os.fstat(f.fileno())
            data = f.read(1_000_001)
    except OSError as e:
        raise KeysFileError(f"setting api_keys_file={path!r}: cannot read it ({e.strerror})") \
            from None
    if len(data) > 1_000_000:
        raise KeysFileError(f"{path}: larger than 1 MB, not a keys file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise KeysFileError(f"{path} line {line}: not UTF-8 text") from None
    return parse_keys(text, path), _signature(stat)


def _signature(stat: os.stat_result) -> tuple:
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


class KeyRing:
    """The keys of a keys file, re-read when the file changes (checked with one ``stat`` per
    ``refresh()``). ``on_reload(result)`` is told ``loaded`` or ``refused``."""

    def __init__(self, path: str, on_reload: Callable[[str], None] = lambda result: None):
        self.path, self.on_reload = path, on_reload
        self._use(*read_keys_file(path))                      # startup: errors are raised
        self._refused: tuple | None = None
        log.info("API keys: %d from %s (%s)", len(self.keys), path, self._names())

    def _use(self, keys: tuple[ApiKey, ...], signature: tuple) -> None:
        self.keys, self.signature = keys, signature
        self._digests = [(bytes.fromhex(key.hash[len(HASH_PREFIX):]), key) for key in keys]

    def _names(self) -> str:
        return ", ".join(f"{k.name}: {'+'.join(sorted(k.roles))}" for k in self.keys)

    def refresh(self) -> None:
        """Re-read the file if it changed since it was last read (or refused)."""
        try:
            signature = _signature(os.stat(self.path))
        except OSError as e:
            signature = ("missing", e.errno)
        if signature in (self.signature, self._refused):
            return
        try:
            self._use(*read_keys_file(self.path))
        except KeysFileError as e:
            self._refused = signature
            log.error("refused the changed API keys file: %s; the %d keys read before stay in "
                      "use", e, len(self.keys))
            self.on_reload("refused")
            return
        self._refused = None
        log.info("API keys reloaded: %d from %s (%s)", len(self.keys), self.path, self._names())
        self.on_reload("loaded")

    def authenticate(self, secret: str) -> ApiKey | None:
        """The key whose hash matches ``secret``'s, compared in constant time with every key
        (no early exit), or None."""
        if not secret or len(secret) > MAX_SECRET_CHARS:
            return None
        presented = hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()
        found = None
        for digest, key in self._digests:
            if hmac.compare_digest(presented, digest):
                found = key
        return found


def keys_file_setting(settings: Settings) -> str | None:
    """The keys file the settings ask for (None with auth=off); SettingsError when auth is
    required without one."""
    if settings.auth == "off":
        return None
    if not settings.api_keys_file:
        raise SettingsError("setting api_keys_file: auth=required needs a keys file "
                            "(create a key with `python -m serving.api.keys new --name NAME "
                            "--roles public --append FILE`, then --api-keys-file FILE or "
                            "SHOPREC_API_KEYS_FILE); for local development only, set "
                            "auth=off explicitly")
    return settings.api_keys_file


def open_key_ring(settings: Settings, on_reload=lambda result: None) -> KeyRing | None:
    """The key ring the settings ask for (None with auth=off); SettingsError when auth is
    required without a usable keys file."""
    path = keys_file_setting(settings)
    if path is None:
        log.warning("auth=off: every caller has every role and is rate-limited by address; "
                    "for development and tests only%s", f" (api_keys_file "
                    f"{settings.api_keys_file} is ignored)" if settings.api_keys_file else "")
        return None
    return KeyRing(path, on_reload)


def create_key(name: str, roles: str, rate: str | None = None) -> tuple[str, ApiKey]:
    """(secret, key) for a new key; ValueError names what is wrong."""
    secret = new_secret()
    line = f"{name} {roles} {hash_secret(secret)}" + (f" rate={rate}" if rate else "")
    key = parse_line(line)
    assert key is not None
    return secret, key


def append_key(path: str, key: ApiKey) -> None:
    """Add ``key``'s line to the keys file (created with mode 0600 if absent), replacing the
    file atomically so a running API never reads half of it; KeysFileError if the result
    would not parse (e.g. the name is taken)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        mode = os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        text, mode = "# shoprec API keys: NAME ROLES HASH [rate=RATE/BURST] " \
                     "(docs/security.md)\n", 0o600
    if text and not text.endswith("\n"):
        text += "\n"
    text += key.line() + "\n"
    parse_keys(text, path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=".keys-", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m serving.api.keys",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    new = sub.add_parser("new", help="create a key: print its secret once and its line")
    new.add_argument("--name", required=True, help="who uses the key (unique in the file)")
    new.add_argument("--roles", required=True,
                     help=f"comma-separated, from {', '.join(ROLES)}")
    new.add_argument("--rate", help="this key's limit RATE/BURST or unlimited (default: "
                                    "the most generous of its roles' rate_limits)")
    new.add_argument("--append", metavar="FILE", help="add the line to this keys file "
                     "(atomically; created with mode 0600)")
    check = sub.add_parser("check", help="parse a keys file; name the first bad line")
    check.add_argument("file")
    args = p.parse_args(argv)
    if args.command == "check":
        try:
            keys, _ = read_keys_file(args.file)
        except KeysFileError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        for key in keys:
            print(f"{key.name}: {', '.join(sorted(key.roles))}"
                  + (f" (rate {'unlimited' if key.unlimited else key.rate})"
                     if key.unlimited or key.rate else ""))
        return 0
    try:
        secret, key = create_key(args.name, args.roles, args.rate)
        if args.append:
            append_key(args.append, key)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("secret (shown once; give it to the client, e.g. Authorization: Bearer <secret>):")
    print(f"  {secret}")
    if args.append:
        print(f"added to {args.append}: {key.line()}")
    else:
        print("line for the keys file:")
        print(f"  {key.line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
