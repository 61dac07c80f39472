"""Reward learning from judge feedback: segments, pair samplers, preference and rating trainers."""

from vlmbench.learning.preferences import PreferenceDataset, preference_loss, train_on_preferences
from vlmbench.learning.ratings import (
    RatingDataset,
    class_weights,
    rating_loss,
    rating_probabilities,
    stratified_batches,
    train_on_ratings,
)
from vlmbench.learning.reward_nets import RewardEnsemble
from vlmbench.learning.segments import (
    DisagreementPairSampler,
    Segment,
    SegmentBuffer,
    SegmentTable,
    UniformPairSampler,
)

__all__ = [
    "DisagreementPairSampler",
    "PreferenceDataset",
    "RatingDataset",
    "RewardEnsemble",
    "Segment",
    "SegmentBuffer",
    "SegmentTable",
    "UniformPairSampler",
    "class_weights",
    "preference_loss",
    "rating_loss",
    "rating_probabilities",
    "stratified_batches",
    "train_on_preferences",
    "train_on_ratings",
]
