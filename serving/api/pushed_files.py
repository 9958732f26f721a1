"""Files the pipeline pushed beside a retrieval version (``<base_dir>/<version>/``: user
segments, search terms), as the API reads them: the folder of the retrieval version it
serves, else the newest one (logged), reloaded when the served version changes. A missing
or unreadable folder means nothing loaded (None), never a failed request.
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Callable

log = logging.getLogger("serving.api.pushed_files")


def versions(base_dir: str, files) -> list[str]:
    """Version folders under ``base_dir`` that hold every one of ``files``, oldest first."""
    try:
        names = os.listdir(base_dir)
    except OSError:
        return []
    found = [n for n in names if n.isdigit() and all(
        os.path.isfile(os.path.join(base_dir, n, f)) for f in files)]
    return sorted(found, key=int)


class VersionShelf:
    """What ``load(folder)`` makes of the folder of the served retrieval version
    (``served_version()``: None while unknown) under ``base_dir`` ("" = nothing to load);
    ``what`` names it in the logs."""

    def __init__(self, base_dir: str, files, served_version: Callable[[], int | None],
                 load: Callable[[str], object], what: str):
        self.base_dir, self.files, self.what = base_dir, tuple(files), what
        self._served_version, self._load = served_version, load
        self._lock = threading.Lock()
        self._loaded: tuple | None = None          # (wanted version, loaded | None)

    def current(self):
        if not self.base_dir:
            return None
        served = self._served_version()
        wanted = str(served) if served is not None else None
        with self._lock:
            if self._loaded is not None and self._loaded[0] == wanted:
                return self._loaded[1]
            found = versions(self.base_dir, self.files)
            pick = wanted if wanted in found else (found[-1] if found else None)
            loaded = None
            if pick is not None:
                try:
                    loaded = self._load(os.path.join(self.base_dir, pick))
                except (OSError, ValueError, KeyError, TypeError) as e:
                    log.warning("cannot read the %s of version %s under %s: %s", self.what,
                                pick, self.base_dir, e)
                if loaded is not None and wanted is not None and pick != wanted:
                    log.warning("no %s for the served retrieval version %s under %s; using "
                                "version %s", self.what, wanted, self.base_dir, pick)
            self._loaded = (wanted, loaded)
            return loaded
