"""What every benchmark knows about its data folders: their provenance title and checksums
(recorded with each result), and the rule that files derived from research-only data are
written outside the repository."""
import hashlib
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROVENANCE_FILE = "PROVENANCE.md"


def sha256(path):
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def provenance_title(folder):
    """The first Markdown heading of the folder's PROVENANCE.md, or None."""
    path = os.path.join(folder, PROVENANCE_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            match = re.match(r"#{1,6}\s+(.*?)(?:\s+#+)?\s*$", line)
            if match and match.group(1):
                return match.group(1)
    return None


def inside(path, folder):
    """Whether ``path`` is ``folder`` or below it (symlinks resolved)."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


def inside_repo(path):
    """Whether ``path`` lies inside this repository (where research-only data must not go)."""
    return inside(path, REPO)
