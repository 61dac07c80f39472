"""vlmbench: vision-language models as reward models for reinforcement learning.

The package reads top to bottom: specs -> envs (environments and rendering) -> judges ->
learning (reward models) and agents -> metrics -> results.
"""

__version__ = "0.1.0"


def _keep_pydantic_off_unreadable_entry_points() -> None:
    """Turn off pydantic's plugins when the installed distributions' entry points cannot all be read.

    pydantic discovers its plugins with ``importlib.metadata.entry_points()`` when the first model
    class is built, and that call fails outright if any installed distribution has, say, an
    entry_points.txt that is not UTF-8, which would stop vlmbench before it starts. vlmbench uses
    no pydantic plugins; its own judge plugins are read one distribution at a time, skipping (and
    ``vlmbench judges list`` reporting) the unreadable one. A choice the user made is kept.
    """
    import os
    from importlib.metadata import entry_points

    try:
        entry_points(group="pydantic")
    except Exception:  # noqa: BLE001 - whatever makes the scan fail would make pydantic's fail
        os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")


_keep_pydantic_off_unreadable_entry_points()
