"""`vlmbench render`: frame files and contact-sheet captions, and the --steps limit."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from vlmbench import plots
from vlmbench.cli import main

from console import one_line_error, vlmbench


def test_file_names_and_captions_number_frames_alike(tmp_path, monkeypatch):
    """Each caption 'ep E step S' sits under the very frame saved as epEE_stepSSSS.png."""
    captions = []
    draw = plots.captioned

    def recording(frame, lines, highlight=None):
        captions.append((frame, lines[0]))
        return draw(frame, lines, highlight)

    monkeypatch.setattr(plots, "captioned", recording)
    argv = ["render", "--task", "cartpole-upright", "--steps", "3", "--episodes", "2", "--out", str(tmp_path)]
    assert main(argv) == 0
    folder = tmp_path / "cartpole-upright"
    names = sorted(p.name for p in folder.glob("ep*.png"))
    assert names == [f"ep{e:02d}_step{s:04d}.png" for e in (0, 1) for s in (1, 2, 3)]
    assert len(captions) == 6
    for frame, caption in captions:
        episode, step = map(int, re.fullmatch(r"ep (\d+) step (\d+)", caption).groups())
        saved = np.asarray(Image.open(folder / f"ep{episode:02d}_step{step:04d}.png"))
        assert np.array_equal(saved, frame), caption
    # the frames differ from step to step, so a shifted numbering would have failed above
    assert not np.array_equal(captions[0][0], captions[2][0])


@pytest.mark.parametrize("steps", ["201", "500", "0", "-3"])
def test_steps_outside_an_episode_are_refused(steps, tmp_path):
    """cartpole-upright episodes are 200 steps long: --steps 200 is the most a render can show."""
    proc = vlmbench("render", "--task", "cartpole-upright", "--steps", steps, "--out", str(tmp_path))
    assert proc.returncode == 2
    assert one_line_error(proc) == (
        f"error: --steps {steps}: give 1 to 200; cartpole-upright episodes end after 200 steps "
        "(env.episode_length), so use --episodes for more frames"
    )
    assert not any(tmp_path.iterdir())
