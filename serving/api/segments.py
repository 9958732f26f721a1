"""The user segments the pipeline pushed, as the API reads them (docs/DESIGN.md, "User
segments"; docs/api.md ``GET /v1/users/{user_id}/segment``).

The pipeline's SegmentsPusher writes ``<segments_dir>/<retrieval version>/`` with
``segments.json`` (aggregate profiles) and ``assignments.json`` (pseudonymous user id ->
segment). ``SegmentShelf`` loads the folder of the retrieval version the API serves (else
the newest one, logged), and reloads when that version changes. It answers two things:

- ``segment_of(user)``: the user's segment profile (None for a user the segmentation did not
  see: no engagement in the train split, or a newer user);
- ``popular_for(user, context)``: the item ids the recommender fills a list with before
  global popularity, for users with at most ``max_history`` engagements (the fallback the
  benchmark measured: benchmarks/results/segments.md), empty otherwise.

A missing or unreadable folder means no segments: the endpoint answers 404 and the
recommender fills with global popularity, as before.
"""
from __future__ import annotations

import json
import os
from typing import Callable

from serving.api.pushed_files import VersionShelf

REPORT_FILE = "segments.json"           # the names pipeline/components/user_segments.py writes
ASSIGNMENTS_FILE = "assignments.json"


class Segments:
    """One pushed segments folder: profiles by segment, segment by user."""

    def __init__(self, version: str, profiles: list, assignments: dict):
        self.version = version
        self.profiles = {int(p["segment"]): p for p in profiles}
        self.assignments = assignments

    @classmethod
    def load(cls, folder: str) -> "Segments":
        with open(os.path.join(folder, REPORT_FILE), encoding="utf-8") as f:
            report = json.load(f)
        with open(os.path.join(folder, ASSIGNMENTS_FILE), encoding="utf-8") as f:
            assignments = json.load(f)["users"]
        return cls(os.path.basename(os.path.normpath(folder)), report["profiles"], assignments)

    def profile(self, user_key: str) -> dict | None:
        segment = self.assignments.get(user_key)
        return None if segment is None else self.profiles.get(int(segment))


class SegmentShelf:
    """The segments of the served retrieval version (module docstring). ``served_version``:
    the retrieval version the API serves now (None: unknown yet)."""

    def __init__(self, base_dir: str, served_version: Callable[[], int | None],
                 max_history: int = 2):
        self.base_dir, self.max_history = base_dir, max_history
        self._shelf = VersionShelf(base_dir, (REPORT_FILE, ASSIGNMENTS_FILE), served_version,
                                   Segments.load, "segments")

    def current(self) -> Segments | None:
        return self._shelf.current()

    def segment_of(self, user_key: str) -> tuple[Segments, dict] | None:
        """(the loaded segments, the user's profile), or None."""
        segments = self.current()
        profile = segments.profile(user_key) if segments is not None else None
        return None if profile is None else (segments, profile)

    def popular_for(self, user_key: str, context) -> list[str]:
        """The user's segment's popular item ids when the user has at most
        ``max_history`` engagements, else []."""
        if len(context.history) > self.max_history:
            return []
        found = self.segment_of(user_key)
        return list(found[1].get("popular_items", [])) if found else []


def public_profile(profile: dict) -> dict:
    """What the endpoint shows of a segment: its description, not its item list."""
    return {key: profile[key] for key in ("segment", "label", "size", "top_categories",
                                          "brands", "price", "activity") if key in profile}


def segment_answer(services, user_id: str) -> dict:
    """The body of ``GET /v1/users/{user_id}/segment`` (``services``: serving.api.services
    .Services); an HTTP 404 when there is no segment to show."""
    from starlette.exceptions import HTTPException  # pylint: disable=import-outside-toplevel
    segments = services.segments.current()
    if segments is None:
        raise HTTPException(404, "no user segments are loaded (setting segments_dir)")
    found = services.segments.segment_of(services.user_key(user_id))
    if found is None:
        raise HTTPException(404, f"user {user_id!r} has no segment (no engagement in the "
                                 "training data of the served segments)")
    return {"user_id": user_id, "segments_version": segments.version,
            "segments": len(segments.profiles), **public_profile(found[1])}
