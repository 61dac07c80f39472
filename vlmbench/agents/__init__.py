"""Agents trained on judge rewards: reward paths inside stable-baselines3 and the run loop."""
