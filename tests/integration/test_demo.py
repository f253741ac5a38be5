"""`saga demo` (the README's first command) runs the order-placement saga end to end."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_demo_shows_success_and_compensation(kafka_bootstrap: str, tmp_path: Path) -> None:
    # No --workdir: the databases go to a temporary directory, the topics are deleted.
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "TMPDIR": str(tmp_path)}
    res = subprocess.run(
        [sys.executable, "-m", "saga.cli", "demo", "--json"],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=ROOT,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    outcome = json.loads(res.stdout)
    by_order = {o["order"]: o for o in outcome}
    assert {o["status"] for o in outcome} == {"completed", "compensated"}
    assert all(o["status"] == o["expected"] for o in outcome)

    # Orders are placed once every consumer group has formed: the happy path goes
    # straight through, without a timeout or a retry.
    happy = by_order["apples and a pear, all goes well"]
    assert happy["status"] == "completed"
    happy_kinds = [e["kind"] for e in happy["timeline"]]
    assert "step.retry_scheduled" not in happy_kinds, happy_kinds
    assert not [e for e in happy["timeline"] if e["kind"] == "event.timer_fired"], (
        "no step of the happy path may time out"
    )
    assert {e["attempt"] for e in happy["timeline"] if e["attempt"]} == {1}
    assert res.stderr.index("ready after") < res.stderr.index("placed order 1")

    # The run's topics are gone with its databases: reruns leave nothing on the broker.
    prefix = re.search(r"topics (demo-[0-9a-f]+\.)\*", res.stderr)
    assert prefix is not None, res.stderr[-2000:]
    assert not [t for t in asyncio.run(_topics(kafka_bootstrap)) if t.startswith(prefix[1])]
    assert not list(tmp_path.iterdir()), "the temporary databases are removed"

    # The Kafka client's chatter while groups form stays out of the demo's output.
    for noise in ("aiokafka", "Group Coordinator Request failed", "Marking the coordinator dead"):
        assert noise not in res.stdout
        assert noise not in res.stderr, res.stderr[-3000:]

    declined = by_order["payment declined: release the stock"]
    kinds = [(e["kind"], e["step"]) for e in declined["timeline"]]
    # The stock reserved first is released after the payment failed.
    assert kinds.index(("step.failed", "authorize_payment")) < kinds.index(
        ("compensation.sent", "reserve_inventory")
    )
    flaky = by_order["shipping flaky after the pivot: retried"]
    shipping_attempts = {
        e["attempt"] for e in flaky["timeline"] if e["step"] == "schedule_shipping" and e["attempt"]
    }
    assert len(shipping_attempts) > 1, "shipping must have been retried"
    assert not any(e["kind"] == "compensation.sent" for e in flaky["timeline"])


async def _topics(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()
