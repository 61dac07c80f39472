"""vlmbench: vision-language models as reward models for reinforcement learning.

The package reads top to bottom: specs -> envs (environments and rendering) -> judges ->
learning (reward models) and agents -> metrics -> results.
"""

__version__ = "0.1.0"
