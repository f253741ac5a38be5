#!/usr/bin/env python3
"""Local infrastructure for saga-coordinator: Apache Kafka (KRaft) and PostgreSQL on 127.0.0.1.

Theory of operation
-------------------
* Kafka comes as plain jars from Maven Central (``deploy/local/kafka/pom.xml``), resolved
  once with ``mvn dependency:copy-dependencies`` into a cache folder outside the repo, and
  run with the local Java. If ``KAFKA_HOME`` points at an unpacked Kafka distribution, its
  ``libs/`` are used instead and nothing is downloaded.
* PostgreSQL comes from Debian's packages (installed with apt-get when missing) and runs
  as its own cluster with its own data directory and port, trust auth on 127.0.0.1,
  durable (``fsync``, ``synchronous_commit`` and ``full_page_writes`` on: a crash or a
  power loss forgets no committed transaction). ``pg_up(directory, port)`` starts a
  further, dedicated cluster the same way (the chaos suite's crashable database).
* Everything lives under ``$SAGA_LOCAL_DIR`` (default ``~/.cache/saga-coordinator/local``).
  Each server's PID is recorded there; ``up`` reuses a server whose PID is alive and
  answers, and ``down`` stops only the PIDs recorded there.
* ``up`` prints the ``KAFKA_BOOTSTRAP_SERVERS=...`` and ``SAGA_DATABASE_URL=...`` lines
  and also writes them to ``$SAGA_LOCAL_DIR/env`` so scripts can ``source`` it.

Standard library only: it must run before the project's virtualenv exists.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import glob
import os
import resource
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
KAFKA_VERSION = os.environ.get("SAGA_KAFKA_VERSION", "4.1.2")
CACHE = Path(os.environ.get("SAGA_CACHE_DIR", Path.home() / ".cache" / "saga-coordinator"))
STATE = Path(os.environ.get("SAGA_LOCAL_DIR", CACHE / "local"))
PG_PORT = int(os.environ.get("SAGA_PG_PORT", "15432"))
PG_DB = "saga"
PG_USER = "saga"
# Single-broker mode and three-broker mode use disjoint ports so both can run at once.
SINGLE_PORTS = [(19092, 19093)]
TRIPLE_PORTS = [(29092, 29093), (29192, 29193), (29292, 29293)]


def say(msg: str) -> None:
    """Progress output goes to stderr so stdout stays machine-readable."""
    print(f"[local] {msg}", file=sys.stderr, flush=True)


def fail(msg: str, hint: str) -> None:
    print(f"[local] ERROR: {msg}\n[local] what to do: {hint}", file=sys.stderr, flush=True)
    sys.exit(1)


def pid_alive(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except OSError:
        return None
    # A zombie (exited child) is not alive.
    try:
        if Path(f"/proc/{pid}/status").read_text().find("State:\tZ") >= 0:
            return None
    except OSError:
        pass
    return pid


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


# ---------------------------------------------------------------------------- Kafka


def kafka_classpath() -> str:
    home = os.environ.get("KAFKA_HOME")
    if home and Path(home, "libs").is_dir():
        say(f"using the Kafka distribution in KAFKA_HOME={home}")
        return str(Path(home, "libs")) + "/*"
    libs = CACHE / f"kafka-{KAFKA_VERSION}"
    if (libs / ".complete").exists():
        return str(libs) + "/*"
    if not shutil.which("mvn"):
        fail("Maven (mvn) is needed to fetch the Kafka broker jars", "apt-get install -y maven")
    say(f"downloading Apache Kafka {KAFKA_VERSION} jars from Maven Central (about 45 MB) ...")
    libs.mkdir(parents=True, exist_ok=True)
    cmd = [
        "mvn",
        "-B",
        "-f",
        str(HERE / "kafka" / "pom.xml"),
        f"-Dkafka.version={KAFKA_VERSION}",
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={libs}",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    tail: list[str] = []
    count = 0
    for line in proc.stdout:
        tail = [*tail[-30:], line.rstrip()]
        if "Downloaded from" in line:
            count += 1
            if count % 10 == 0:
                say(f"  ... {count} artifacts downloaded")
    if proc.wait() != 0 or not glob.glob(str(libs / "kafka_2.13-*.jar")):
        print("\n".join(tail), file=sys.stderr)
        fail("could not resolve the Kafka jars", "check access to Maven Central and rerun")
    (libs / ".complete").touch()
    say(f"Kafka jars ready in {libs}")
    return str(libs) + "/*"


def kafka_props(node_id: int, ports: list[tuple[int, int]], data: Path) -> str:
    port, cport = ports[node_id - 1]
    n = len(ports)
    rf = min(3, n)
    isr = 2 if n >= 3 else 1
    lines = [
        "process.roles=broker,controller",
        f"node.id={node_id}",
        f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
        f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        f"log.dirs={data}",
        "num.partitions=1",
        f"default.replication.factor={rf}",
        f"min.insync.replicas={isr}",
        # Internal topics: transactions need these to match the cluster size.
        f"offsets.topic.replication.factor={rf}",
        f"transaction.state.log.replication.factor={rf}",
        f"transaction.state.log.min.isr={isr}",
        f"share.coordinator.state.topic.replication.factor={rf}",
        f"share.coordinator.state.topic.min.isr={isr}",
        # Test-friendly speed-ups.
        "offsets.topic.num.partitions=3",
        "transaction.state.log.num.partitions=3",
        "group.initial.rebalance.delay.ms=0",
        "transaction.abort.timed.out.transaction.cleanup.interval.ms=1000",
        "num.network.threads=2",
        "num.io.threads=2",
        "num.recovery.threads.per.data.dir=1",
        "log.cleaner.backoff.ms=1000",
    ]
    if n == 1:
        lines.append(f"controller.quorum.bootstrap.servers=127.0.0.1:{cport}")
    else:
        voters = ",".join(f"{i + 1}@127.0.0.1:{c}" for i, (_, c) in enumerate(ports))
        lines.append(f"controller.quorum.voters={voters}")
    return "\n".join(lines) + "\n"


def jvm_opts(node_dir: Path) -> list[str]:
    return [
        "-Xms256m",
        "-Xmx768m",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={HERE / 'kafka' / 'log4j2.properties'}",
        f"-Dkafka.logs.dir={node_dir / 'logs'}",
    ]


def new_cluster_id() -> str:
    """A KRaft cluster id: a random UUID in URL-safe base64, never starting with "-".

    Kafka's own ``Uuid.randomUuid`` avoids a leading "-" too, so command lines take it.
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def kafka_cluster_dir(brokers: int) -> Path:
    return STATE / ("kafka" if brokers == 1 else f"kafka{brokers}")


PARTITIONS_WARNING = 4000
"""Partitions on a node above which ``up`` warns: each holds open files on the broker,
and a broker at its open-files limit refuses work ("Too many open files")."""


def kafka_up(brokers: int, fresh: bool = False) -> str:
    """Start the nodes of the cluster that are down; return its bootstrap servers.

    ``fresh``: when no node runs, start from empty storage (the topics of earlier runs
    are removed). The test command starts its broker this way: every test run makes
    topics of its own, and a broker that keeps those of every earlier run ends up at
    its open-files limit.
    """
    ports = SINGLE_PORTS if brokers == 1 else TRIPLE_PORTS
    bootstrap = ",".join(f"127.0.0.1:{p}" for p, _ in ports)
    cdir = kafka_cluster_dir(brokers)
    alive = [pid_alive(cdir / f"node{i}" / "kafka.pid") for i in range(1, brokers + 1)]
    if all(alive) and all(port_open(p) for p, _ in ports):
        say(f"Kafka already running ({bootstrap}, pids {', '.join(map(str, alive))})")
        warn_if_many_partitions(cdir)
        return bootstrap
    if fresh and not any(alive) and cdir.exists():
        say(f"starting Kafka from empty storage (removing {cdir})")
        shutil.rmtree(cdir)
    warn_if_many_partitions(cdir)
    java = shutil.which("java")
    if not java:
        fail("Java is needed to run the Kafka broker", "apt-get install -y openjdk-17-jre-headless")
    cp = kafka_classpath()
    cluster_id_file = cdir / "cluster.id"
    if not cluster_id_file.exists():
        cdir.mkdir(parents=True, exist_ok=True)
        cid = new_cluster_id()
        cluster_id_file.write_text(cid)
    cid = cluster_id_file.read_text().strip()
    for i in range(1, brokers + 1):
        node = cdir / f"node{i}"
        if pid_alive(node / "kafka.pid"):
            continue
        for p in ports[i - 1]:
            if port_open(p):
                fail(
                    f"port {p} on 127.0.0.1 is taken by another process",
                    "stop it, or run `deploy/local/down` if it is a leftover of ours",
                )
        (node / "data").mkdir(parents=True, exist_ok=True)
        (node / "logs").mkdir(parents=True, exist_ok=True)
        props = node / "server.properties"
        props.write_text(kafka_props(i, ports, node / "data"))
        if not (node / "data" / "meta.properties").exists():
            say(f"formatting Kafka storage for node {i}")
            fmt = [
                java,
                *jvm_opts(node),
                "-cp",
                cp,
                "kafka.tools.StorageTool",
                "format",
                f"--cluster-id={cid}",  # one argument: an id may start with "-"
                "-c",
                str(props),
            ]
            if brokers == 1:
                fmt.insert(-3, "--standalone")
            res = subprocess.run(fmt, capture_output=True, text=True)
            if res.returncode != 0:
                print(res.stdout + res.stderr, file=sys.stderr)
                fail("formatting Kafka storage failed", f"remove {cdir} and rerun")
        say(f"starting Kafka node {i} on 127.0.0.1:{ports[i - 1][0]}")
        log = open(node / "logs" / "console.log", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            [java, *jvm_opts(node), "-cp", cp, "kafka.Kafka", str(props)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=raise_open_files_limit,
        )
        (node / "kafka.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + float(os.environ.get("SAGA_KAFKA_START_TIMEOUT", "180"))
    for i in range(1, brokers + 1):
        node = cdir / f"node{i}"
        while not port_open(ports[i - 1][0]):
            if not pid_alive(node / "kafka.pid"):
                print(log_tail(node / "logs"), file=sys.stderr)
                fail(f"Kafka node {i} exited during start-up", f"read {node}/logs/")
            if time.monotonic() > deadline:
                fail(f"Kafka node {i} not listening in time", f"read {node}/logs/kafka.log")
            time.sleep(0.5)
    wait_kafka_ready(bootstrap, brokers, deadline)
    say(f"Kafka ready on {bootstrap}")
    return bootstrap


def log_tail(logs: Path, chars: int = 4000) -> str:
    """The end of a node's logs: the JVM's own output, then the broker's log."""
    parts = []
    for name in ("console.log", "kafka.log"):
        path = logs / name
        if path.exists() and path.stat().st_size:
            with path.open("rb") as f:
                f.seek(max(0, path.stat().st_size - chars))
                parts.append(f"--- {path}\n" + f.read().decode(errors="replace"))
    return "\n".join(parts)


def raise_open_files_limit() -> None:
    """In the broker's process: raise the open-files soft limit to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        # If refused, the limit stays as it was; warn_if_many_partitions tells when it matters.
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def warn_if_many_partitions(cdir: Path) -> None:
    for data in sorted(cdir.glob("node*/data")):
        count = sum(1 for d in data.iterdir() if d.is_dir())
        if count > PARTITIONS_WARNING:
            say(
                f"warning: {count} partitions in {data} (leftover topics of earlier runs?); "
                "a broker near its open-files limit refuses work. To start from empty "
                "storage: deploy/local/down && deploy/local/up --fresh"
            )


def wait_kafka_ready(bootstrap: str, brokers: int, deadline: float) -> None:
    """Ready means a producer can send and a consumer can read, not just an open port."""
    py = venv_python()
    if py is None:
        say("no .venv yet: readiness checked by open port only")
        return
    probe = HERE / "probe_kafka.py"
    while True:
        left = max(5.0, deadline - time.monotonic())
        res = subprocess.run(
            [py, str(probe), bootstrap, str(brokers)],
            capture_output=True,
            text=True,
            timeout=left + 30,
        )
        if res.returncode == 0:
            return
        if time.monotonic() > deadline:
            print(res.stdout + res.stderr, file=sys.stderr)
            fail(
                "Kafka does not accept a producer and a consumer",
                f"read {STATE}/kafka*/node*/logs/kafka.log",
            )
        time.sleep(1)


def venv_python() -> str | None:
    repo = HERE.parent.parent
    py = repo / ".venv" / "bin" / "python"
    return str(py) if py.exists() else None


def kafka_down(brokers: int) -> None:
    cdir = kafka_cluster_dir(brokers)
    for node in sorted(cdir.glob("node*")):
        stop_pid(node / "kafka.pid", f"Kafka {node.name}")


def stop_pid(pidfile: Path, what: str) -> None:
    pid = pid_alive(pidfile)
    if pid is None:
        pidfile.unlink(missing_ok=True)
        return
    say(f"stopping {what} (pid {pid})")
    os.kill(pid, 15)
    for _ in range(120):
        if pid_alive(pidfile) is None:
            break
        time.sleep(0.25)
    else:
        os.kill(pid, 9)
    pidfile.unlink(missing_ok=True)


# ---------------------------------------------------------------------------- PostgreSQL

PG_DURABILITY = ("fsync", "synchronous_commit", "full_page_writes")
"""The settings that decide whether a committed transaction survives a crash."""


def pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        if os.geteuid() != 0:
            fail("PostgreSQL is not installed", "sudo apt-get install -y postgresql")
        say("installing PostgreSQL from Debian's packages (apt-get) ...")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", "postgresql"],
            check=True,
            env=env,
        )
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found:
            fail("PostgreSQL install did not provide initdb", "apt-get install -y postgresql")
    return Path(found[-1]).parent


def as_pg_user(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the `postgres` system user."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


def pg_url(port: int = PG_PORT) -> str:
    """The SQLAlchemy URL of the ``saga`` database of the cluster on 127.0.0.1:``port``."""
    return f"postgresql+asyncpg://{PG_USER}@127.0.0.1:{port}/{PG_DB}"


def pg_psql(
    bindir: Path, port: int, sql: str, db: str = "postgres"
) -> subprocess.CompletedProcess[str]:
    cmd = [str(bindir / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", PG_USER]
    cmd += ["-d", db, "-tAc", sql]
    return subprocess.run(as_pg_user(cmd), capture_output=True, text=True)


def pg_durability(bindir: Path, port: int) -> dict[str, str]:
    """The :data:`PG_DURABILITY` settings of the server on ``port`` (empty: no answer)."""
    names = ",".join(f"'{n}'" for n in PG_DURABILITY)
    res = pg_psql(bindir, port, f"SELECT name, setting FROM pg_settings WHERE name IN ({names})")
    if res.returncode != 0:
        return {}
    return dict(line.split("|", 1) for line in res.stdout.split() if "|" in line)


def pg_durable(settings: dict[str, str]) -> bool:
    """Whether a committed transaction survives a crash or power loss with these settings."""
    return (
        settings.get("fsync") == "on"
        and settings.get("full_page_writes") == "on"
        and settings.get("synchronous_commit", "off") != "off"
    )


def pg_up(directory: Path | str | None = None, port: int | None = None) -> str:
    """Start (or reuse) a PostgreSQL cluster and return the URL of its ``saga`` database.

    ``directory`` (default ``$SAGA_LOCAL_DIR/postgres``) holds the cluster (``data/``, its
    log and socket; ``initdb`` the first time), ``port`` (default ``$SAGA_PG_PORT``) is
    its port on 127.0.0.1. The server runs durable (``fsync``, ``synchronous_commit`` and
    ``full_page_writes`` at their defaults, on). A cluster that already runs is reused
    as it is; if it runs with settings that can lose commits, a warning says so.
    """
    port = PG_PORT if port is None else int(port)
    pgdir = STATE / "postgres" if directory is None else Path(directory)
    url = pg_url(port)
    data = pgdir / "data"
    bindir = pg_bin()
    if (data / "postmaster.pid").exists() and port_open(port):
        say(f"PostgreSQL already running on 127.0.0.1:{port}")
        pg_warn_if_not_durable(bindir, port)
        return url
    pgdir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(pgdir, "postgres", "postgres")
        if pgdir.parent == STATE:
            STATE.chmod(0o755)
        for parent in pgdir.parents:
            if parent == Path("/"):
                break
            parent.chmod(parent.stat().st_mode | 0o011)  # let postgres traverse
    if not (data / "PG_VERSION").exists():
        say(f"creating a PostgreSQL cluster in {data}")
        res = subprocess.run(
            as_pg_user(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    PG_USER,
                    "--auth=trust",
                    "-E",
                    "UTF8",
                ]
            ),
            capture_output=True,
            text=True,
        )
        if res.returncode != 0:
            print(res.stdout + res.stderr, file=sys.stderr)
            fail("initdb failed", f"remove {data} and rerun")
    if port_open(port):
        fail(
            f"port {port} on 127.0.0.1 is taken by another process",
            "set SAGA_PG_PORT to a free port, or stop that process",
        )
    say(f"starting PostgreSQL on 127.0.0.1:{port}")
    # Durable: fsync, synchronous_commit and full_page_writes keep their defaults (on).
    opts = (
        f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={pgdir} "
        "-c max_connections=200 -c shared_buffers=256MB"
    )
    res = subprocess.run(
        as_pg_user(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(pgdir / "server.log"),
                "-o",
                opts,
                "-w",
                "-t",
                "60",
                "start",
            ]
        ),
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        print(res.stdout + res.stderr, file=sys.stderr)
        fail("PostgreSQL did not start", f"read {pgdir}/server.log")
    res = pg_psql(bindir, port, f"SELECT 1 FROM pg_database WHERE datname='{PG_DB}'")
    if res.stdout.strip() != "1":
        subprocess.run(
            as_pg_user(
                [
                    str(bindir / "createdb"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "-U",
                    PG_USER,
                    PG_DB,
                ]
            ),
            check=True,
        )
    say(f"PostgreSQL ready on 127.0.0.1:{port}")
    return url


def pg_warn_if_not_durable(bindir: Path, port: int) -> None:
    """Say so when the running server on ``port`` can lose committed transactions."""
    settings = pg_durability(bindir, port)
    if not settings or pg_durable(settings):
        return
    shown = " ".join(f"{k}={settings.get(k, '?')}" for k in PG_DURABILITY)
    say(
        f"WARNING: PostgreSQL on 127.0.0.1:{port} runs NOT durable ({shown}): a crash may "
        "forget committed transactions whose commands were already published. It was "
        "started with older settings and is not restarted; to run durable: "
        "deploy/local/down && deploy/local/up --postgres"
    )


def pg_down(directory: Path | str | None = None) -> None:
    """Stop the cluster in ``directory`` (default ``$SAGA_LOCAL_DIR/postgres``), if it runs."""
    data = (STATE / "postgres" if directory is None else Path(directory)) / "data"
    if not (data / "postmaster.pid").exists():
        return
    say(f"stopping PostgreSQL ({data})")
    subprocess.run(
        as_pg_user([str(pg_bin() / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
        capture_output=True,
        text=True,
    )


# ---------------------------------------------------------------------------- entry


def main() -> None:
    parser = argparse.ArgumentParser(prog="deploy/local", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start Kafka (and PostgreSQL) and print their addresses")
    up.add_argument("--postgres", action="store_true", help="also start PostgreSQL")
    up.add_argument(
        "--fresh",
        action="store_true",
        help="if Kafka is not running, start it from empty storage (its topics are removed)",
    )
    up.add_argument(
        "--brokers",
        type=int,
        choices=[1, 3],
        default=1,
        help="three brokers in one KRaft quorum, for fault tests",
    )
    down = sub.add_parser("down", help="stop everything `up` started")
    down.add_argument(
        "--brokers",
        type=int,
        choices=[1, 3],
        default=None,
        help="stop only this Kafka cluster (default: everything)",
    )
    sub.add_parser("env", help="print the addresses of what runs")
    args = parser.parse_args()
    STATE.mkdir(parents=True, exist_ok=True)
    envfile = STATE / "env"
    if args.cmd == "up":
        lines = [f"KAFKA_BOOTSTRAP_SERVERS={kafka_up(args.brokers, fresh=args.fresh)}"]
        if args.postgres:
            lines.append(f"SAGA_DATABASE_URL={pg_up()}")
        envfile.write_text("".join(f"export {line}\n" for line in lines))
        print("\n".join(lines))
    elif args.cmd == "down":
        for b in [args.brokers] if args.brokers else [1, 3]:
            kafka_down(b)
        if args.brokers is None:
            pg_down()
            envfile.unlink(missing_ok=True)
    elif args.cmd == "env" and envfile.exists():
        print(envfile.read_text().replace("export ", ""), end="")


if __name__ == "__main__":
    main()
