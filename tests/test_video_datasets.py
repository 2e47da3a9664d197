"""The paper video datasets in Latte's folder layouts, on tiny stand-ins written here (24 x 32 px, 40-60 frames; frame
i is flat grey 4 * i, so a clip's grey levels give back the frame indices it holds)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import paper_assets as assets
from ditpareto.errors import InputError
from ditpareto.video_datasets import (LAYOUT_PATTERNS, UNCONDITIONAL, VIDEO_LAYOUTS, VideoEntry, clip_indices,
                                      clip_windows, draw_start, list_videos, read_window, sample_clips, square_frame)
from ditpareto.videoio import write_clips

HEIGHT, WIDTH = 24, 32


def grey_frames(count: int) -> np.ndarray:
    """(count, H, W, 3) uint8, frame i flat at grey level 4 * i."""
    return np.broadcast_to((4 * np.arange(count, dtype=np.uint8))[:, None, None, None],
                           (count, HEIGHT, WIDTH, 3)).copy()


def write_mp4(path: Path, count: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_clips(path, grey_frames(count)[None])  # this repository's H.264 path (PyAV libx264, near-lossless)
    return path


def write_avi(path: Path, count: int) -> Path:
    """MPEG-4 part 2 in AVI, as UCF101 ships (xvid)."""
    return assets.write_avi(path, grey_frames(count))


def write_frames(folder: Path, names: list[str], levels: list[int]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, level in zip(names, levels):
        Image.fromarray(np.full((HEIGHT, WIDTH, 3), level, dtype=np.uint8)).save(folder / name, quality=95)
    return folder


def clip_levels(clip: np.ndarray) -> np.ndarray:
    """The grey level of each frame of a clip (F, S, S, 3), rounded to the nearest frame index."""
    return np.rint(clip.reshape(len(clip), -1).mean(axis=1) / 4).astype(int)


def test_faceforensics_finds_mp4_recursively_in_sorted_order(tmp_path):
    videos = tmp_path / "train" / "videos"
    write_mp4(videos / "b.mp4", 50)
    write_mp4(videos / "a" / "z.mp4", 60)
    (videos / "notes.txt").write_text("not a video")
    write_mp4(tmp_path / "test" / "videos" / "c.mp4", 50)  # another split: not read
    entries = list_videos("ffs", tmp_path)
    assert [e.path for e in entries] == [videos / "a" / "z.mp4", videos / "b.mp4"]
    assert [e.num_frames for e in entries] == [60, 50]
    assert {e.label for e in entries} == {UNCONDITIONAL} and UNCONDITIONAL == 0
    assert all(e.layout == "ffs" and e.frame_files == () for e in entries)


def test_ucf101_labels_are_the_sorted_class_folder_index(tmp_path):
    videos = tmp_path / "videos"
    for name in ("YoYo", "Basketball", "ApplyEyeMakeup"):  # created out of order
        write_avi(videos / name / f"v_{name}_g01_c01.avi", 50)
    write_avi(videos / "Basketball" / "v_Basketball_g02_c01.avi", 52)
    entries = list_videos("ucf101", tmp_path)
    assert [(e.path.name, e.label) for e in entries] == [
        ("v_ApplyEyeMakeup_g01_c01.avi", 0), ("v_Basketball_g01_c01.avi", 1), ("v_Basketball_g02_c01.avi", 1),
        ("v_YoYo_g01_c01.avi", 2)]
    assert [e.num_frames for e in entries] == [50, 50, 52, 50]
    clips, labels = sample_clips(entries, count=4, size=16, seed=0)
    assert clips.shape == (4, 16, 16, 16, 3) and clips.dtype == np.uint8
    assert labels.dtype == np.int64 and sorted(labels.tolist()) == [0, 1, 1, 2]


def test_sky_sorts_frames_by_the_integer_after_the_last_underscore_and_keeps_folders_over_48_frames(tmp_path):
    names = [f"07_clip_{n}.jpg" for n in range(1, 61)]  # unpadded: a name sort puts 10 before 2
    write_frames(tmp_path / "v2" / "clip1", names, [4 * (n - 1) for n in range(1, 61)])
    write_frames(tmp_path / "v1" / "clip1", [f"x_{n:04d}.jpg" for n in range(49)], [0] * 49)  # 49 > 48: kept
    write_frames(tmp_path / "v1" / "clip2", [f"x_{n:04d}.jpg" for n in range(48)], [0] * 48)  # 48: ignored
    entries = list_videos("sky", tmp_path)
    assert [(e.path.relative_to(tmp_path).as_posix(), e.num_frames) for e in entries] == [("v1/clip1", 49),
                                                                                         ("v2/clip1", 60)]
    order = [f.name for f in entries[1].frame_files]
    assert order == names and order != sorted(names) and sorted(names)[:3] == ["07_clip_1.jpg", "07_clip_10.jpg",
                                                                              "07_clip_11.jpg"]
    # frame i of the folder (in integer order) is grey 4 * i: the clip holds every 3rd frame from its start
    start = 5
    clip = read_window(entries[1], clip_indices("sky", start), size=16)
    assert clip.shape == (16, 16, 16, 3)
    assert clip_levels(clip).tolist() == list(range(start, start + 48, 3))


def test_taichi_frame_folders_in_order_and_frames_by_number(tmp_path):
    train = tmp_path / "frames" / "train"
    write_frames(train / "vid_b", [f"{n:07d}.png" for n in range(50)], [4 * n for n in range(50)])
    write_frames(train / "vid_a", [f"{n:07d}.png" for n in range(40)], [4 * n for n in range(40)])
    write_frames(tmp_path / "frames" / "test" / "vid_c", [f"{n:07d}.png" for n in range(50)], [0] * 50)  # not read
    entries = list_videos("taichi", tmp_path)
    assert [(e.path.name, e.num_frames, e.label) for e in entries] == [("vid_a", 40, UNCONDITIONAL),
                                                                       ("vid_b", 50, UNCONDITIONAL)]
    # taichi counts every folder with frames; the 40-frame one is too short for a clip and skipped when sampling
    clips, labels = sample_clips(entries, count=3, size=HEIGHT, seed=0)
    assert labels.tolist() == [UNCONDITIONAL] * 3
    for clip in clips:  # PNG is lossless: exact levels, the only video is vid_b, starts 0 or 1 (Latte's bound)
        levels = clip_levels(clip)
        assert levels[0] in (0, 1) and levels.tolist() == list(range(levels[0], levels[0] + 48, 3))


def test_mp4_clips_come_back_in_frame_order(tmp_path):
    write_mp4(tmp_path / "train" / "videos" / "a.mp4", 60)
    entries = list_videos("ffs", tmp_path)
    windows = clip_windows(entries, count=2, seed=3)
    clips, _ = sample_clips(entries, count=2, size=16, seed=3)
    for window, clip in zip(windows, clips):
        assert clip_levels(clip).tolist() == list(window.indices)  # H.264 at qp 10 keeps flat frames within 1 level


def test_latte_window_start_range_and_index_rules():
    rng = np.random.default_rng(0)
    assert {draw_start(50, 48, rng) for _ in range(200)} == {0, 1}  # Latte: randint(0, total - span - 1)
    assert {draw_start(48, 48, rng) for _ in range(20)} == {0}
    assert max(draw_start(100, 48, rng) for _ in range(2000)) == 51
    files = clip_indices("ffs", 5)  # linspace over the 48-frame window [5, 52]
    assert files.tolist() == np.linspace(5, 52, 16, dtype=int).tolist()
    assert files[0] == 5 and files[-1] == 52 and set(np.diff(files).tolist()) == {3, 4}
    assert (clip_indices("ucf101", 5) == files).all()
    for layout in ("sky", "taichi"):  # Latte slices the frame list [start:start + 48:3]
        assert clip_indices(layout, 5).tolist() == list(range(5, 53, 3))


def test_clip_windows_cycles_a_seeded_order_and_skips_short_videos(caplog):
    lengths = [60, 47, 100, 48, 20, 75]  # 47 and 20 are shorter than 16 * 3 = 48
    entries = [VideoEntry("ffs", Path(f"{i}.mp4"), UNCONDITIONAL, n) for i, n in enumerate(lengths)]
    with caplog.at_level(logging.WARNING, logger="ditpareto.video_datasets"):
        windows = clip_windows(entries, count=9, seed=1)
    assert "skipped 2 of 6 videos shorter than 48 frames" in caplog.text
    videos = [w.video for w in windows]
    assert sorted(videos[:4]) == [0, 2, 3, 5] and videos[4:8] == videos[:4] and videos[8] == videos[0]
    for w in windows:
        assert len(w.indices) == 16 and 0 <= w.indices[0] <= max(0, lengths[w.video] - 49)
        assert w.indices[-1] == w.indices[0] + 47 and w.indices[-1] < lengths[w.video]
    assert windows == clip_windows(entries, count=9, seed=1)
    assert windows != clip_windows(entries, count=9, seed=2)
    with pytest.raises(InputError, match="no video holds 48 frames"):
        clip_windows(entries[1::3], count=1)


def test_square_frames_resize_the_short_side_and_crop_the_centre():
    image = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
    image[:, 4, 0] = 255  # the first and last columns of the centre 24 x 24 crop (offset (32 - 24) / 2 = 4)
    image[:, 27, 1] = 255
    image[:, 3, 2] = 255  # just outside it
    for crop_first in (False, True):
        square = square_frame(Image.fromarray(image), HEIGHT, crop_first)
        assert square.shape == (24, 24, 3) and square.dtype == np.uint8
        assert (square[:, 0] == [255, 0, 0]).all() and (square[:, 23] == [0, 255, 0]).all()
        assert square[..., 2].max() == 0
    tall = square_frame(Image.fromarray(image.transpose(1, 0, 2)), HEIGHT)  # 32 x 24: the crop is vertical
    assert (tall[0] == [255, 0, 0]).all() and (tall[23] == [0, 255, 0]).all()
    assert square_frame(Image.fromarray(image), 16).shape == (16, 16, 3)
    assert square_frame(Image.fromarray(image[..., 0]), 40).shape == (40, 40, 3)  # grey in, RGB out; upscaled


@pytest.mark.parametrize("layout", VIDEO_LAYOUTS)
def test_a_missing_root_or_an_empty_layout_is_one_clear_line(tmp_path, layout):
    for root, what in ((tmp_path / "missing", "does not exist"), (tmp_path, "no videos under")):
        with pytest.raises(InputError) as error:
            list_videos(layout, root)
        message = str(error.value)
        assert "\n" not in message and message.startswith(f"{layout}: ")
        assert what in message and str(root) in message and LAYOUT_PATTERNS[layout] in message


def test_short_sky_folders_only_and_an_unknown_layout_are_refused(tmp_path):
    write_frames(tmp_path / "v" / "clip", [f"x_{n}.jpg" for n in range(48)], [0] * 48)
    with pytest.raises(InputError, match="sky: no videos under"):
        list_videos("sky", tmp_path)
    with pytest.raises(InputError, match="unknown video layout 'kinetics'"):
        list_videos("kinetics", tmp_path)
    write_frames(tmp_path / "w", ["frame.png"], [0])
    with pytest.raises(InputError, match="frame.png has no integer after its last '_'"):
        list_videos("sky", tmp_path)
