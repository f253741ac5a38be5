"""The operator console: server-rendered pages at ``/ui/`` of ``saga api``.

Sagas (filters, counts, live refresh), one saga (graph with its progress, timeline,
attempts, data, audit check), the sagas that need attention with the operator verbs
(each dry-run through the engine before it is sent), the dead-letter topic, the
definitions and an overview of throughput, latency, outbox and consumer lag.

Browsers sign in with a bearer token of ``SAGA_API_TOKENS`` (see
:mod:`saga.console._session`); roles are the API's. Every asset is bundled under
``static/``: nothing is loaded from elsewhere at run time.
"""

from saga.console._views import CONSOLE, Console, setup_console

__all__ = ["CONSOLE", "Console", "setup_console"]
