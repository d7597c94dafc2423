"""Expected echoes: taken once each, bounded."""

from __future__ import annotations

from bridge.core.echoes import Expected


def test_an_expected_echo_is_taken_once_and_old_ones_are_forgotten():
    expected = Expected(limit=2)
    expected.add(("!room", "@alice:x", True))
    assert expected.take(("!room", "@alice:x", True))
    # The person typing in Matrix later is theirs, not an echo.
    assert not expected.take(("!room", "@alice:x", True))
    for n in range(3):
        expected.add(n)
    assert not expected.take(0) and expected.take(1) and expected.take(2)
