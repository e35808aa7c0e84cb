"""Window planner: parity with the reference's windows (the fixture set's windows.json), the options,
and the errors."""

from __future__ import annotations

import pytest
from parity_fixture import FRAMES, WINDOW_LENGTHS, WINDOWS

from champ_core.pipeline.windows import (
    WindowError,
    WindowOptions,
    fusion_weights,
    ordered_halving,
    plan_windows,
)


@pytest.mark.parametrize("num_frames", WINDOW_LENGTHS)
def test_default_plan_matches_reference(num_frames):
    expected = WINDOWS[str(num_frames)]
    plan = plan_windows(num_frames)
    for step in (0, 1, 19):  # the reference plans with step 0 every step: no shifting by default
        assert plan.frame_lists(step) == expected["windows"]
    assert plan.coverage().tolist() == expected["frame_coverage_count"]
    assert plan.num_windows() == expected["num_windows"]


def test_fixture_covers_its_own_video_and_several_windows():
    assert FRAMES in WINDOW_LENGTHS  # the set's pipeline run is among the planned lengths
    assert len(WINDOW_LENGTHS) >= 3 and any(WINDOWS[str(n)]["num_windows"] > 2 for n in WINDOW_LENGTHS)


@pytest.mark.parametrize("num_frames", [25, 30, 47, 100, 250, 961])
def test_open_schedule_never_wraps_and_covers(num_frames):
    options = WindowOptions(schedule="open")
    for step in range(4):
        for shift in (False, True):
            plan = plan_windows(num_frames, WindowOptions(schedule="open", shift_per_step=shift))
            windows = plan.frame_lists(step)
            for w in windows:
                assert len(w) == options.length
                assert w == list(range(w[0], w[0] + options.length))  # contiguous, no wrap
            assert (plan.coverage(step) >= 1).all()
            assert windows[-1][-1] == num_frames - 1


def test_shifted_windows_move_between_steps_and_stay_valid():
    plan = plan_windows(100, WindowOptions(shift_per_step=True))
    assert plan.frame_lists(0) == plan_windows(100).frame_lists(0)
    assert plan.frame_lists(1) != plan.frame_lists(0)
    assert plan.frame_lists(1)[0][0] == 50  # ordered halving: step 1 shifts by half the clip
    for step in range(8):
        assert (plan.coverage(step) >= 1).all()
        assert all(len(w) == 24 and len(set(w)) == 24 for w in plan.frame_lists(step))


def test_ordered_halving_sequence():
    assert [ordered_halving(s) for s in range(4)] == [0.0, 0.5, 0.25, 0.75]


def test_pyramid_weights_peak_in_the_middle():
    assert fusion_weights(6, "pyramid") == (1.0, 2.0, 3.0, 3.0, 2.0, 1.0)
    assert fusion_weights(5, "pyramid") == (1.0, 2.0, 3.0, 2.0, 1.0)
    assert fusion_weights(3, "flat") == (1.0, 1.0, 1.0)
    window = plan_windows(50, WindowOptions(fusion="pyramid")).windows()[1]
    assert len(window.weights) == 24 and max(window.weights) == 12.0


def test_short_clip_is_one_window():
    plan = plan_windows(7, WindowOptions(schedule="open", shift_per_step=True))
    assert plan.frame_lists(3) == [list(range(7))]


def test_stride_adds_dilated_windows():
    plan = plan_windows(100, WindowOptions(stride=2))
    lists = plan.frame_lists()
    assert lists[:5] == plan_windows(100).frame_lists()
    assert lists[5][:3] == [0, 2, 4]


@pytest.mark.parametrize(
    "options, message",
    [
        (WindowOptions(length=33), "32 frame positions"),  # the planner's default limit (not the fixture's)
        (WindowOptions(length=24, overlap=24), "overlap"),
        (WindowOptions(schedule="spiral"), "schedule"),
        (WindowOptions(fusion="gauss"), "fusion"),
    ],
)
def test_bad_options_are_clear_errors(options, message):
    with pytest.raises(WindowError, match=message):
        plan_windows(100, options)


def test_zero_frames_is_an_error():
    with pytest.raises(WindowError, match="at least one frame"):
        plan_windows(0)


def test_describe_lists_windows():
    text = plan_windows(100).describe()
    assert "5 windows" in text and "[80..3]" in text
