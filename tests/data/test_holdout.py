"""The held-out split's rules, checked over many random folders: deterministic, about 15%, copies together,
frames in blocks, every class on both sides where it can be."""

from __future__ import annotations

import random

import pytest

from botnet.data.holdout import Item, hold_out, read_heldout, write_heldout
from botnet.errors import DatasetError


def _items(tmp_path, names, contents, classes):
    items = []
    for name, content, shown in zip(names, contents, classes):
        path = tmp_path / name
        path.write_bytes(content)
        items.append(Item(name, str(path), frozenset(shown)))
    return items


@pytest.mark.parametrize("seed", range(12))
def test_copies_stay_together_and_every_class_is_on_both_sides(tmp_path, seed):
    rng = random.Random(seed)
    count = rng.randint(20, 60)
    names = [f"{rng.choice('abcxyz')}{rng.randint(0, 10**6)}_{k}.jpg" for k in range(count)]
    contents = [f"image {k}".encode() for k in range(count)]
    first, second = rng.sample(range(count), 2)
    contents[second] = contents[first]  # a byte-identical copy under another name
    classes = [{rng.randrange(4)} for _ in range(count)]
    items = _items(tmp_path, names, contents, classes)
    held = hold_out(items)
    assert held == hold_out(list(reversed(items)))  # the order they are listed in does not matter
    assert (names[first] in held) == (names[second] in held)
    assert round(0.15 * count) <= len(held) <= round(0.25 * count) + 1  # + 1: a copy moves with its twin
    kept = [item for item in items if item.name not in held]
    for shown in range(4):
        if sum(shown in item.classes for item in items) >= 3:  # in two groups at least, even with the copy
            assert any(shown in item.classes for item in kept)
            assert any(shown in item.classes for item in items if item.name in held)


def test_numbered_frames_are_held_out_in_contiguous_blocks(tmp_path):
    names = [f"frame_{k:05d}.png" for k in range(100)]
    items = _items(tmp_path, names, [bytes([k]) for k in range(100)], [{0}] * 100)
    frames = sorted(int(name[6:11]) for name in hold_out(items))
    assert len(frames) == 15
    assert frames == list(range(frames[0], frames[0] + 15))  # one block, not 15 scattered frames


def test_too_few_images_cannot_be_split(tmp_path):
    with pytest.raises(DatasetError, match=r"1 image\(s\) cannot be split into training and held-out images"):
        hold_out(_items(tmp_path, ["a.jpg"], [b"a"], [{0}]))
    with pytest.raises(DatasetError, match="all copies of one picture"):
        hold_out(_items(tmp_path, ["a.jpg", "b.jpg"], [b"a", b"a"], [{0}, {0}]))


def test_the_held_out_list_is_written_and_read_back(tmp_path):
    write_heldout(str(tmp_path / "heldout.txt"), {"b/x y.jpg", "a.jpg"})
    assert (tmp_path / "heldout.txt").read_text() == "a.jpg\nb/x y.jpg\n"
    assert read_heldout(str(tmp_path / "heldout.txt")) == {"a.jpg", "b/x y.jpg"}
    assert read_heldout(str(tmp_path / "none.txt")) is None


def test_a_large_group_of_copies_does_not_push_the_share_past_a_quarter(tmp_path):
    for seed in range(6):
        rng = random.Random(seed)
        names = [f"{rng.randint(0, 10**6)}_{k}.jpg" for k in range(20)]
        contents = [b"same" if k < 10 else f"image {k}".encode() for k in range(20)]
        held = hold_out(_items(tmp_path, names, contents, [{0}] * 20))
        assert 1 <= len(held) <= 5
        assert not held & set(names[:10])  # the ten copies move together, and they are too many to hold out
