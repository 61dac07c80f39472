"""`python -m vlmbench`: the same as the `vlmbench` command."""

from vlmbench.cli import entry

entry()
