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

from saga.cli._contracts import contracts_group  # noqa: E402

cli.add_command(contracts_group)

from saga.cli._admin import admin  # noqa: E402
from saga.cli._coordinator import coordinator  # noqa: E402
from saga.cli._definitions import graph, lint  # noqa: E402
from saga.cli._demo import demo  # noqa: E402
from saga.cli._explore import explore  # noqa: E402
from saga.cli._outbox import outbox  # noqa: E402
from saga.cli._publish import publish_start  # noqa: E402
from saga.cli._relay import relay  # noqa: E402

cli.add_command(admin)
cli.add_command(coordinator)
cli.add_command(demo)
cli.add_command(explore)
cli.add_command(graph)
cli.add_command(lint)
cli.add_command(outbox)
cli.add_command(publish_start)
cli.add_command(relay)

from saga.cli._api import api  # noqa: E402
from saga.cli._sagas import COMMANDS as _SAGA_COMMANDS  # noqa: E402

cli.add_command(api)
for _command in _SAGA_COMMANDS:
    cli.add_command(_command)

from saga.cli._db import db  # noqa: E402

cli.add_command(db)

from saga.cli._bench import bench  # noqa: E402

cli.add_command(bench)

from saga.cli._chaos import chaos  # noqa: E402

cli.add_command(chaos)

from saga.cli._audit import audit  # noqa: E402

cli.add_command(audit)

from saga.cli._dlq import dlq  # noqa: E402

cli.add_command(dlq)
