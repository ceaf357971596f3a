"""The one level vocabulary (netsentinel/levels.py)."""

from netsentinel.levels import LEVELS, THREAT_LEVELS, is_level, rank


def test_order_and_threat_levels():
    assert [rank(lv) for lv in LEVELS] == [0, 1, 2, 3]
    assert rank("INFO") < rank("MEDIUM") < rank("HIGH") < rank("CRITICAL")
    assert THREAT_LEVELS == tuple(lv for lv in LEVELS if rank(lv) >= rank("HIGH"))


def test_unknown_levels_rank_below_every_known_one():
    for junk in (None, "", "info", "SEVERE", "critical "):
        assert rank(junk) == -1 and not is_level(junk)
    assert is_level("MEDIUM") and not is_level(3)
