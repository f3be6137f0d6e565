"""The procedural data generator and the model-free adherence reader, against scenes whose truth is known."""

from __future__ import annotations

import numpy as np
import pytest

from dit_sparse.embedded.adherence import contact_sheet, read_object
from dit_sparse.embedded.scenes import (
    BACKGROUNDS,
    COLORS,
    DIRECTIONS,
    PROMPT_WORDS,
    SHAPES,
    Scene,
    evaluation_scenes,
    random_object,
    random_scene,
    render,
)


def test_render_shape_dtype_and_any_size():
    scene = random_scene(np.random.default_rng(0))
    for frames, h, w in ((17, 128, 128), (5, 40, 72), (1, 8, 8)):
        video = render(scene, frames, h, w)
        assert video.shape == (frames, h, w, 3) and video.dtype == np.uint8


def test_render_rejects_bad_sizes():
    with pytest.raises(ValueError, match="num_frames >= 1"):
        render(random_scene(np.random.default_rng(0)), 0, 64, 64)


def test_object_is_drawn_in_its_colour_and_moves_in_its_direction():
    rng = np.random.default_rng(1)
    for color in COLORS:
        for direction, (dy, dx) in DIRECTIONS.items():
            obj = random_object(rng, shape="square", color=color, direction=direction)
            scene = Scene("dark", BACKGROUNDS["dark"], (obj,))
            video = render(scene, 9, 96, 96).astype(int)
            masks = np.abs(video - np.asarray(BACKGROUNDS["dark"])).max(-1) > 60
            ys, xs = np.nonzero(masks[0])
            ye, xe = np.nonzero(masks[-1])
            move = (ye.mean() - ys.mean(), xe.mean() - xs.mean())
            assert np.sign(move[0]) == dy or (dy == 0 and abs(move[0]) < 1)
            assert np.sign(move[1]) == dx or (dx == 0 and abs(move[1]) < 1)
            inside = video[0][masks[0]].mean(axis=0)
            assert np.abs(inside - np.asarray(obj.rgb)).max() < 25  # anti-aliased edges pull the mean a little


def test_objects_stay_inside_the_frame():
    rng = np.random.default_rng(2)
    for _ in range(200):
        obj = random_object(rng)
        dy, dx = DIRECTIONS[obj.direction]
        for t in (0.0, 1.0):
            cy = obj.start[0] + dy * obj.travel * t
            cx = obj.start[1] + dx * obj.travel * t
            assert obj.size / 2 <= cy <= 1 - obj.size / 2
            assert obj.size / 2 <= cx <= 1 - obj.size / 2


def test_prompts_use_only_the_vocabulary_and_name_what_is_drawn():
    rng = np.random.default_rng(3)
    seen_two = seen_no_background = False
    for _ in range(300):
        scene = random_scene(rng)
        words = scene.prompt.split()
        assert set(words) <= set(PROMPT_WORDS)
        for obj in scene.objects:
            assert obj.phrase in scene.prompt
        assert (f"on a {scene.background} background" in scene.prompt) == scene.name_background
        seen_two |= len(scene.objects) == 2
        seen_no_background |= not scene.name_background
        if len(scene.objects) == 2:
            assert scene.objects[0].color != scene.objects[1].color
    assert seen_two and seen_no_background
    assert random_scene(np.random.default_rng(4)) == random_scene(np.random.default_rng(4))  # seeded


def test_unknown_object_attributes_are_rejected():
    with pytest.raises(ValueError, match="unknown object"):
        random_object(np.random.default_rng(0), color="purple")


def test_evaluation_scenes_cover_every_colour_direction_and_shape():
    scenes = evaluation_scenes(40)
    pairs = {(s.objects[0].color, s.objects[0].direction) for s in scenes}
    assert pairs == {(c, d) for c in COLORS for d in DIRECTIONS}
    assert {s.objects[0].shape for s in scenes} == set(SHAPES)
    assert evaluation_scenes(40) == scenes


def test_reader_is_right_on_rendered_ground_truth():
    for scene in evaluation_scenes(40):
        reading = read_object(render(scene, 17, 128, 128))
        assert reading.color == scene.objects[0].color, scene.prompt
        assert reading.direction == scene.objects[0].direction, scene.prompt


def test_reader_reports_no_motion_and_no_object():
    scene = evaluation_scenes(1)[0]
    still = np.repeat(render(scene, 1, 64, 64), 9, axis=0)
    assert read_object(still).direction == "none"
    blank = np.full((9, 64, 64, 3), 30, dtype=np.uint8)
    assert read_object(blank) == read_object(blank) and read_object(blank).color == "none"
    with pytest.raises(ValueError, match="expected a"):
        read_object(still[0])


def test_contact_sheet_lays_out_evenly_spaced_frames_one_row_per_video():
    videos = [render(scene, 17, 32, 48) for scene in evaluation_scenes(3)]
    sheet = contact_sheet(videos, frames=5)
    assert sheet.shape == (3 * 32, 5 * 48, 3) and sheet.dtype == np.uint8
    for row, video in enumerate(videos):  # frames 0, 4, 8, 12, 16 of each video, left to right
        for col, frame in enumerate((0, 4, 8, 12, 16)):
            np.testing.assert_array_equal(sheet[row * 32 : (row + 1) * 32, col * 48 : (col + 1) * 48], video[frame])
    assert contact_sheet([videos[0][:3]], frames=5).shape == (32, 3 * 48, 3)  # fewer frames than asked
    with pytest.raises(ValueError, match="one"):
        contact_sheet([videos[0], videos[1][:5]])
    with pytest.raises(ValueError, match="no videos"):
        contact_sheet([])
