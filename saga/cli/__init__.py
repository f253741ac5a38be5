"""The ``saga`` command.

Each area registers its subcommands in its own module (``_db.py``, ``_relay.py``, ...);
this module assembles the group. Only the CLI reads the environment (see ``_settings``).
"""

from __future__ import annotations

import click

from saga.cli._settings import Settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="saga-coordinator")
def cli() -> None:
    """saga-coordinator: orchestrated sagas over Kafka, with an exactly-once outbox."""


def main() -> None:
    """Entry point of the ``saga`` console script."""
    cli()


__all__ = ["Settings", "cli", "main"]
