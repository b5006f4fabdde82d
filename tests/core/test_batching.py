"""The one batching loop: consecutive slices in order, a bar only for several batches, clear errors."""

import pytest

from avisc_lib.models.batching import batches


@pytest.mark.parametrize(
    "n, batch_size, expected",
    [
        (10, 4, [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]),
        (8, 4, [[0, 1, 2, 3], [4, 5, 6, 7]]),
        (3, 5, [[0, 1, 2]]),
        (3, 1, [[0], [1], [2]]),
        (0, 2, []),
    ],
)
def test_batches_are_consecutive_and_numbered(n, batch_size, expected):
    items = list(range(n))
    got = list(batches(n, batch_size))
    assert [k for k, _ in got] == list(range(len(expected)))
    assert [items[rows] for _, rows in got] == expected


@pytest.mark.parametrize("batch_size", [0, -1, 2.0, True, "4", None])
def test_bad_batch_size_is_named_at_the_call(batch_size):
    with pytest.raises(ValueError, match=rf"^batch_size must be an int >= 1, got {batch_size!r}$"):
        batches(10, batch_size)  # not iterated: the check happens at the call


@pytest.mark.parametrize("n", [-1, 1.5, False])
def test_bad_item_count_is_named(n):
    with pytest.raises(ValueError, match=rf"^n must be an int >= 0, got {n!r}$"):
        batches(n, 2)


@pytest.mark.parametrize(
    "n, desc, shown",
    [(10, "study", True), (4, "study", False), (10, None, False)],
)
def test_the_bar_shows_only_for_several_batches_with_a_label(capsys, n, desc, shown):
    list(batches(n, 4, desc=desc))
    assert ("study" in capsys.readouterr().err) == shown
