"""An example vlmbench judge plugin; see README.md."""

from vlmbench_judge_example.judge import ColourHeightJudge, ColourHeightParams

__all__ = ["ColourHeightJudge", "ColourHeightParams"]
