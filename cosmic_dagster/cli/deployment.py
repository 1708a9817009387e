"""The production shape on one machine: PostgreSQL storage, code server, daemon, webserver.

``cosmic-dagster deploy up`` (``make deploy-local``) creates the database if needed, writes
``deploy/dagster.yaml`` into ``DAGSTER_HOME``, creates the schema once (three processes starting
on an empty database would race on the migrations), sets the pool limits and starts the three
processes. The same instance file and workspace run in the containers of docker-compose.yaml.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cosmic_dagster.cli.services import INSTANCE_YAML, DagsterServices
from cosmic_dagster.config import ConfigError

if TYPE_CHECKING:
    from dagster import DagsterInstance

PRODUCTION_YAML = INSTANCE_YAML / "deploy" / "dagster.yaml"

#: What Globus allows (3 active tasks per user) and what we let queue per Slurm machine.
DEFAULT_POOLS = {"globus": 3, "slurm-perlmutter": 8, "slurm-local": 8, "local-compute": 8}


@dataclass(frozen=True)
class PostgresSettings:
    """Where the instance lives; the same ``DAGSTER_PG_*`` variables as deploy/dagster.yaml."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)  # never printed
    db: str = "cosmic_dagster"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PostgresSettings:
        env = os.environ if env is None else env
        raw_port = env.get("DAGSTER_PG_PORT") or "5432"
        if not raw_port.isdigit():
            raise ConfigError(f"DAGSTER_PG_PORT={raw_port!r} is not a port number")
        db = env.get("DAGSTER_PG_DB") or "cosmic_dagster"
        if not db.replace("_", "").isalnum():
            raise ConfigError(f"DAGSTER_PG_DB={db!r}: use letters, digits and underscores")
        return cls(
            host=env.get("DAGSTER_PG_HOST") or "127.0.0.1",
            port=int(raw_port),
            user=env.get("DAGSTER_PG_USER") or "postgres",
            password=env.get("DAGSTER_PG_PASSWORD", ""),
            db=db,
        )

    def env(self) -> dict[str, str]:
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USER": self.user,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_DB": self.db,
        }

    def connect(self, db: str | None = None) -> Any:
        """An autocommit psycopg2 connection (to ``db``, default this settings' database)."""
        import psycopg2

        try:
            conn = psycopg2.connect(
                host=self.host, port=self.port, user=self.user, password=self.password, dbname=db or self.db
            )
        except psycopg2.OperationalError as exc:
            where = f"{self.user}@{self.host}:{self.port}/{db or self.db}"
            raise ConfigError(f"cannot connect to PostgreSQL {where} (DAGSTER_PG_*): {exc}".strip()) from None
        conn.autocommit = True
        return conn

    @contextmanager
    def admin(self) -> Iterator[Any]:
        """A cursor on the server's ``postgres`` database (for CREATE/DROP DATABASE)."""
        conn = self.connect("postgres")
        try:
            with conn.cursor() as cur:
                yield cur
        finally:
            conn.close()

    def ensure_database(self) -> bool:
        """Create the database if it does not exist; True if it was created."""
        with self.admin() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.db,))
            if cur.fetchone():
                return False
            cur.execute(f'CREATE DATABASE "{self.db}"')
            return True

    def drop_database(self) -> None:
        with self.admin() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')

    def drop_connections(self) -> int:
        """Terminate every session on the database (what a Postgres restart does to clients)."""
        with self.admin() as cur:
            cur.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (self.db,),
            )
            return int(cur.fetchone()[0])


def pool_limits(env: Mapping[str, str] | None = None) -> dict[str, int]:
    """``COSMIC_POOL_LIMITS=globus=3,slurm-perlmutter=8`` overrides the defaults, pool by pool."""
    env = os.environ if env is None else env
    limits = dict(DEFAULT_POOLS)
    for item in filter(None, (env.get("COSMIC_POOL_LIMITS") or "").split(",")):
        name, _, value = item.strip().partition("=")
        if not name or not value.strip().isdigit():
            raise ConfigError(f"COSMIC_POOL_LIMITS: {item!r} is not pool=limit (e.g. globus=3)")
        limits[name] = int(value)
    return limits


def set_pool_limits(instance: DagsterInstance, limits: Mapping[str, int]) -> None:
    for name, limit in limits.items():
        instance.event_log_storage.set_concurrency_slots(name, limit)


def open_instance(dagster_home: Path, pg: PostgresSettings) -> DagsterInstance:
    """The instance of a production home, from this process (the caller disposes of it).

    deploy/dagster.yaml reads the connection from ``DAGSTER_PG_*`` when the instance is created;
    they are set only for that moment, so this process's environment is left as it was.
    """
    from dagster import DagsterInstance

    saved = {k: os.environ.get(k) for k in pg.env()}
    os.environ.update(pg.env())
    try:
        return DagsterInstance.from_config(str(dagster_home))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def prepare_production_home(home: Path, pg: PostgresSettings, limits: Mapping[str, int]) -> None:
    """DAGSTER_HOME with deploy/dagster.yaml, the schema created and the pool limits set."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(PRODUCTION_YAML, home / "dagster.yaml")
    pg.ensure_database()
    with open_instance(home, pg) as instance:
        instance.get_runs(limit=1)
        set_pool_limits(instance, limits)


def start_deployment(
    home: Path, *, port: int, code_port: int, env: Mapping[str, str] | None = None
) -> DagsterServices:
    """Prepare ``home`` and start the code server, the daemon and the webserver."""
    env = dict(os.environ if env is None else env)
    pg = PostgresSettings.from_env(env)
    dagster_home = home / "dagster_home"
    prepare_production_home(dagster_home, pg, pool_limits(env))
    full_env = {
        **env,
        **pg.env(),
        "DAGSTER_HOME": str(dagster_home),
        "COSMIC_DATA_ROOT": env.get("COSMIC_DATA_ROOT") or str(home / "data"),
        "COSMIC_UI_URL": env.get("COSMIC_UI_URL") or f"http://127.0.0.1:{port}",  # alert links
    }
    services = DagsterServices(env=full_env, log_dir=home / "logs", port=port, code_server_port=code_port)
    services.start()
    return services
