"""trainer/candidates/context_features.py: score transforms and brand affinity by hand."""
import numpy as np

from trainer import features as F
from trainer.candidates import context_features as cf


def test_log_count_and_relative_to_first():
    np.testing.assert_allclose(cf.log_count(np.array([[0.0, 3.0, -1.0]])),
                               [[0.0, np.log(4.0), 0.0]])
    np.testing.assert_allclose(cf.relative_to_first(np.array([[0.9, 0.7, 1.0],
                                                              [0.2, 0.2, -0.3]])),
                               [[0.0, -0.2, 0.1], [0.0, 0.0, -0.5]])


def test_brand_codes_and_affinity():
    codes = cf.brand_codes(["b", "", "a", "b", ""])
    assert codes[1] == codes[4] == -1 and codes[0] == codes[3] != codes[2] >= 0
    histories = [np.array([0, 2, 3]), np.array([1]), np.array([], np.int64)]
    candidates = np.array([[3, 2, 4], [4, 0, 1], [0, 1, 2]])
    share, last = cf.brand_affinity(histories, candidates, codes)
    np.testing.assert_allclose(share, [[2 / 3, 1 / 3, 0], [0, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(last, [[1, 0, 0], [0, 0, 0], [0, 0, 0]])   # no brand: 0
    named = cf.brand_features(histories, candidates, codes)
    assert list(named) == [F.HISTORY_BRAND_SHARE, F.LAST_ITEM_SAME_BRAND]
    np.testing.assert_array_equal(named[F.HISTORY_BRAND_SHARE], share)
