"""Labelled-state datasets for evaluating judges: simulator states with the success detector's label."""
