"""Where the trainer tests keep the exported MiniLM, so one export serves a whole session."""
import os

SEQ_LEN = 24          # the export tests/trainer/text/test_encoder.py uses (same cache key)


def encoder_cache(tmp_path_factory) -> str:
    """$SHOPREC_CACHE_DIR/text_encoder when set (kept across sessions, e.g. on a CI cache),
    else the session directory tests/trainer/text/test_encoder.py exports into."""
    if os.environ.get("SHOPREC_CACHE_DIR"):
        return os.path.join(os.environ["SHOPREC_CACHE_DIR"], "text_encoder")
    return str(tmp_path_factory.getbasetemp() / "text_encoder_cache")
