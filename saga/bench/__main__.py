"""``python -m saga.bench ROLE CONFIG_JSON``: one worker process of the benchmark."""

import sys

from saga.bench._worker import main

main(sys.argv[1:])
