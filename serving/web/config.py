"""Where the operator console reads the pipeline's records: one frozen dataclass, read from
``SHOPREC_*`` environment variables like the API's own settings (serving/api/settings.py)."""
from __future__ import annotations

import os
from dataclasses import dataclass

METADATA_PATH_ENV = "SHOPREC_METADATA_PATH"


@dataclass(frozen=True)
class WebConfig:
    """``metadata_path``: the pipeline's ML Metadata SQLite file (``runs/metadata.db`` in
    the demo, ``PipelineConfig.metadata_path``); empty = the console shows no pipeline data
    and says how to set it."""

    metadata_path: str = ""

    @classmethod
    def from_env(cls, environ=None) -> "WebConfig":
        environ = os.environ if environ is None else environ
        return cls(metadata_path=environ.get(METADATA_PATH_ENV, "").strip())
