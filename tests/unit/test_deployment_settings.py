"""Deployment settings: the database and the pool limits, validated with clear errors."""

import pytest

from cosmic_dagster.cli.deployment import DEFAULT_POOLS, PostgresSettings, pool_limits
from cosmic_dagster.config import ConfigError


def test_postgres_defaults_are_the_local_server():
    pg = PostgresSettings.from_env({})
    assert (pg.host, pg.port, pg.user, pg.password, pg.db) == (
        "127.0.0.1",
        5432,
        "postgres",
        "",
        "cosmic_dagster",
    )
    assert pg.env()["DAGSTER_PG_PORT"] == "5432"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DAGSTER_PG_PORT": "54x"}, "DAGSTER_PG_PORT='54x' is not a port number"),
        ({"DAGSTER_PG_DB": 'x"; DROP'}, "DAGSTER_PG_DB="),
    ],
)
def test_bad_postgres_settings_are_named(env, message):
    with pytest.raises(ConfigError, match=message):
        PostgresSettings.from_env(env)


def test_an_unreachable_server_is_a_config_error_naming_where():
    pg = PostgresSettings.from_env({"DAGSTER_PG_PORT": "1", "DAGSTER_PG_PASSWORD": "pw-secret"})
    with pytest.raises(ConfigError, match=r"cannot connect to PostgreSQL postgres@127\.0\.0\.1:1/") as info:
        pg.ensure_database()
    assert "pw-secret" not in str(info.value)


def test_pool_limits_override_the_defaults_one_by_one():
    limits = pool_limits({"COSMIC_POOL_LIMITS": "globus=2, slurm-perlmutter=16,new-pool=1"})
    assert limits == {**DEFAULT_POOLS, "globus": 2, "slurm-perlmutter": 16, "new-pool": 1}
    assert pool_limits({}) == DEFAULT_POOLS


@pytest.mark.parametrize("raw", ["globus", "globus=three", "=3", "globus=-1"])
def test_bad_pool_limits_are_named(raw):
    with pytest.raises(ConfigError, match="is not pool=limit"):
        pool_limits({"COSMIC_POOL_LIMITS": raw})
