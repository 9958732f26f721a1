"""benchmarks/robust_training.py: the seeded typos the robustness columns are measured with."""
import random

from benchmarks.robust_training import typo


def test_typos_are_seeded_and_one_edit_per_long_word():
    text = "Nova Red Matte Lipstick for lips"
    first = typo(text, random.Random(1), rate=1.0)
    assert first == typo(text, random.Random(1), rate=1.0)
    assert typo(text, random.Random(1), rate=0.0) == text
    for before, after in zip(text.split(), first.split()):
        if len(before) < 4:
            assert after == before
        else:
            assert after != before or len(set(before)) < len(before)
            assert len(after) in (len(before), len(before) - 1)
            assert sorted(after) == sorted(before) or len(after) == len(before) - 1
