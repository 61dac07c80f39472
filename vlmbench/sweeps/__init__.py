"""Grids of evaluations and runs, on local processes or a Ray cluster, ending in the leaderboard."""
