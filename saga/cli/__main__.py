"""``python -m saga.cli`` runs the ``saga`` command."""

from saga.cli import main

main()
