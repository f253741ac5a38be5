"""The ``saga`` command.

Each area registers its subcommands in its own module (``_db.py``, ``_relay.py``, ...);
this module assembles the group. Only the CLI reads the environment (see
:class:`saga.settings.Settings`, re-exported here).
"""

from __future__ import annotations

import click

from saga.cli._admin import admin
from saga.cli._api import api
from saga.cli._audit import audit
from saga.cli._bench import bench
from saga.cli._chaos import chaos
from saga.cli._contracts import contracts_group
from saga.cli._coordinator import coordinator
from saga.cli._db import db
from saga.cli._definitions import graph, lint
from saga.cli._demo import demo
from saga.cli._dlq import dlq
from saga.cli._explore import explore
from saga.cli._outbox import outbox
from saga.cli._publish import publish_start
from saga.cli._relay import relay
from saga.cli._sagas import COMMANDS as _SAGA_COMMANDS
from saga.settings import Settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="saga-coordinator")
def cli() -> None:
    """saga-coordinator: orchestrated sagas over Kafka, with an exactly-once outbox."""


def main() -> None:
    """Entry point of the ``saga`` console script."""
    cli()


for _command in (
    contracts_group,
    admin,
    coordinator,
    demo,
    explore,
    graph,
    lint,
    outbox,
    publish_start,
    relay,
    api,
    *_SAGA_COMMANDS,
    db,
    bench,
    chaos,
    audit,
    dlq,
):
    cli.add_command(_command)

__all__ = ["Settings", "cli", "main"]
