"""A throwaway PostgreSQL server for the ``postgres`` tier, started once per session.

initdb into a temporary folder, ``pg_ctl start`` on a free loopback port (its unix socket
in the same folder), stopped and deleted at teardown. PostgreSQL refuses to run as root,
so under root the server runs as the ``postgres`` OS user (created when missing). Missing
server binaries fail the tier with the command that installs them: it never skips.
"""

from __future__ import annotations

import grp
import itertools
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

BINARIES = ("initdb", "pg_ctl", "postgres")
INSTALL_HINT = (
    "the postgres test tier needs PostgreSQL's server binaries (initdb, pg_ctl); "
    "`make test` installs Debian's `postgresql` package (apt-get install -y postgresql), "
    "or set SPYGLASS_PG_BINDIR to their folder"
)


def pg_bindir() -> Path | None:
    """The folder of initdb/pg_ctl/postgres: $SPYGLASS_PG_BINDIR, `pg_config --bindir`
    (libpq-dev's pg_config may name a folder without the server), Debian's
    /usr/lib/postgresql/N/bin (newest first), then the PATH."""
    candidates: list[Path] = []
    if env := os.environ.get("SPYGLASS_PG_BINDIR"):
        candidates.append(Path(env))
    if pg_config := shutil.which("pg_config"):
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip():
            candidates.append(Path(out.stdout.strip()))

    def version(p: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", p.parent.name))

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).resolve().parent)
    for folder in candidates:
        if all(os.access(folder / b, os.X_OK) for b in BINARIES):
            return folder
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresServer:
    bindir: Path
    root: Path
    """Temporary folder: the data directory, the log and the unix socket."""
    port: int
    user: str | None
    """OS user the server runs as (``postgres`` under root); None: the current user."""

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """A server binary, run as the server's OS user."""
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=self.root)
        if check and done.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{' '.join(args[:2])} failed ({done.returncode}): "
                f"{done.stderr.strip() or done.stdout.strip()}\n{log}"
            )
        return done

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def psql(self, database: str, sql: str) -> str:
        """Run ``sql`` as the superuser; returns psql's output."""
        return self.run(
            "psql", "-h", str(self.root), "-p", str(self.port), "-U", "postgres",
            "-d", database, "-v", "ON_ERROR_STOP=1", "-c", sql,
        ).stdout  # fmt: skip

    def create_database(self, name: str) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        self.run("createdb", "-h", str(self.root), "-p", str(self.port), "-U", "postgres", name)
        return self.url(name)


def _server_user() -> str | None:
    if os.geteuid() != 0:
        return None
    if shutil.which("runuser") is None:
        pytest.fail("running as root, the postgres tier needs `runuser` (util-linux)")
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        try:
            grp.getgrnam("postgres")
            group = ["--gid", "postgres"]
        except KeyError:
            group = ["--user-group"]
        subprocess.run(["useradd", "--system", "--no-create-home", *group, "postgres"], check=True)
    return "postgres"


def start_server() -> PostgresServer:
    bindir = pg_bindir()
    if bindir is None:
        pytest.fail(INSTALL_HINT)
    user = _server_user()
    # Not under pytest's tmp folder: that one is private to root, and the server's user
    # must reach its data directory.
    root = Path(tempfile.mkdtemp(prefix="spyglass-pg-"))
    if user:
        shutil.chown(root, user)
    server = PostgresServer(bindir, root, _free_port(), user)
    server.run(
        "initdb", "-D", str(server.data), "-U", "postgres", "--auth=trust",
        "--encoding=UTF8", "--locale=C", "--no-sync",
    )  # fmt: skip
    # A throwaway server: durability off, loopback only, the socket beside the data.
    options = (
        f"-p {server.port} -k {root} -c listen_addresses=127.0.0.1 "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    )
    for attempt in range(3):
        done = server.run(
            "pg_ctl", "-D", str(server.data), "-l", str(server.log), "-w", "-t", "60",
            "-o", options, "start", check=attempt == 2,
        )  # fmt: skip
        if done.returncode == 0:
            break
        server.port = _free_port()  # another process took the port meanwhile
        options = re.sub(r"-p \d+", f"-p {server.port}", options)
    return server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = start_server()
    try:
        yield server
    finally:
        server.run("pg_ctl", "-D", str(server.data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(server.root, ignore_errors=True)


MIGRATIONS = Path(__file__).parent / "neuronpedia_migrations"
TEMPLATE = "neuronpedia_template"
_names = itertools.count()


def migrations_sql() -> list[tuple[str, str]]:
    """Each of Neuronpedia's migrations, name and SQL, in Prisma's order, with pgvector's
    two uses made the stand-in's: Debian 12 has no pgvector for its PostgreSQL 15, so
    ``vector`` is a domain over ``real[]``, the extension statement is left out and
    ``vector(256)`` reads ``vector``. Both rewrites are counted, so a new use of pgvector
    fails loudly rather than being rewritten blind. The two columns are
    ``Explanation.embedding`` and ``Sample.conversationEmbedding``, which no Spyglass
    record (nor Neuronpedia's importer) writes."""
    out, extension, typed = [], 0, 0
    for folder in sorted(p for p in MIGRATIONS.iterdir() if p.is_dir()):
        text = (folder / "migration.sql").read_text()
        text, n = re.subn(r'CREATE EXTENSION IF NOT EXISTS "vector";', "", text)
        extension += n
        text, n = re.subn(r"\bvector\(256\)", "vector", text)
        typed += n
        out.append((folder.name, text))
    assert (extension, typed) == (1, 2), "Neuronpedia's migrations use pgvector anew"
    return out


def _connect(server: PostgresServer, database: str) -> psycopg.Connection:
    # autocommit: each of the import's steps is its own statement, as in Neuronpedia.
    return psycopg.connect(
        host="127.0.0.1", port=server.port, user="postgres", dbname=database, autocommit=True
    )


@pytest.fixture(scope="session")
def neuronpedia(postgres_server):
    """A template database holding Neuronpedia's schema (its migrations, vendored
    unchanged) and its seeded bot user, made once per session; returns a function that
    makes a fresh copy and returns a connection to it."""
    from indexer.neuronpedia.records import BOT

    postgres_server.create_database(TEMPLATE)
    with _connect(postgres_server, TEMPLATE) as conn:
        conn.execute("CREATE DOMAIN vector AS real[]")
        for name, text in migrations_sql():
            try:
                conn.execute(text)
            except psycopg.Error as exc:
                raise AssertionError(f"migration {name}: {exc}") from exc
        # prisma/seed.ts: the bot user every export's creatorId names.
        conn.execute(
            'INSERT INTO "User" (id, name, bot, admin, "emailUnsubscribeCode", '
            '"emailNewsletterNotification", "emailUnsubscribeAll") '
            "VALUES (%s, 'bot', true, true, 'seeded', false, true)",
            (BOT,),
        )
    opened = []

    def fresh() -> psycopg.Connection:
        name = f"neuronpedia_{next(_names)}"
        with _connect(postgres_server, "postgres") as admin:
            admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
        conn = _connect(postgres_server, name)
        opened.append(conn)
        return conn

    yield fresh
    for conn in opened:
        conn.close()
