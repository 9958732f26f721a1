"""Domain-adaptive MLM pretraining: report, adapted backbone, export from the adapted weights."""
import itertools
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from trainer.text import domain_pretraining
from trainer.text.encoder import (TextEncoderPaths, encode_texts, ensure_text_encoder)

SEQ_LEN = 24          # export length shared with the other text encoder tests (cache hit)
PROBE = ["red matte lipstick", "naïve café soap", "Hydrating Face Moisturizer SPF 30"]


def _catalog_texts():
    """48 deterministic shop-like titles."""
    brands = ["Lumière", "OPI", "Neutrogena", "Burt's Bees"]
    products = ["Matte Lipstick", "Nail Lacquer", "Face Moisturizer SPF 30", "Lip Balm"]
    shades = ["Ruby Red", "Nude Beige", "Coral Crush"]
    return [f"{b} {p}, {s}" for b, p, s in itertools.product(brands, products, shades)]


@pytest.fixture(scope="module")
def adapted(tmp_path_factory):
    out = tmp_path_factory.mktemp("dapt")
    texts = out / "texts.txt"
    texts.write_text("\n".join(_catalog_texts()) + "\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    proc = subprocess.run(
        [sys.executable, "-m", "trainer.text.domain_pretraining", "--texts", str(texts),
         "--out", str(out), "--steps", "1", "--head-steps", "0", "--seed", "3",
         "--seq-len", "16", "--batch-size", "8", "--export-seq-len", str(SEQ_LEN)],
        env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.slow
def test_reports_heldout_mlm_loss_and_writes_a_preset(adapted):
    with open(adapted / domain_pretraining.REPORT_FILE, encoding="utf-8") as f:
        report = json.load(f)
    for key in ("heldout_mlm_loss_before", "heldout_mlm_loss_after"):
        assert math.isfinite(report[key]) and 0 < report[key] < 15
    assert report["heldout_mlm_loss_before"] != report["heldout_mlm_loss_after"]
    assert (report["num_train_texts"], report["num_heldout_texts"]) == (43, 5)
    assert {"config.json", "model.weights.h5"} <= set(os.listdir(adapted / "backbone"))


@pytest.mark.slow
def test_encoder_exported_from_adapted_weights_differs(adapted, tmp_path_factory):
    original = ensure_text_encoder(tmp_path_factory.getbasetemp() / "text_encoder_cache",
                                   SEQ_LEN)
    paths = TextEncoderPaths(str(adapted / domain_pretraining.EXPORT_DIR))
    assert paths.info()["backbone"] == str(adapted / "backbone")
    before, after = encode_texts(PROBE, original), encode_texts(PROBE, paths)
    assert np.abs(after - before).max() > 1e-5                     # the weights moved ...
    assert np.min(np.sum(after * before, axis=1)) > 0.9            # ... a little: 1 step


def test_read_texts_and_split(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("a\n\n  b  \nc\n", encoding="utf-8")
    assert domain_pretraining.read_texts(str(path)) == ["a", "b", "c"]
    train, heldout = domain_pretraining.split_heldout(list("abcdefghij"), 0.2, seed=1)
    assert len(heldout) == 2 and sorted(train + heldout) == list("abcdefghij")
    assert (train, heldout) == domain_pretraining.split_heldout(list("abcdefghij"), 0.2, 1)
    path.write_text("only one\n", encoding="utf-8")
    with pytest.raises(ValueError, match="at least 2"):
        domain_pretraining.read_texts(str(path))
