"""SFAPI credentials from files/env (old-system parity) and the script as submitted."""

from __future__ import annotations

from pathlib import Path

import pytest

from cosmic_dagster.compute.protocol import JobSpec
from cosmic_dagster.compute.sfapi.compute import (
    SfapiCompute,
    SfapiCredentials,
    sbatch_directives,
    sfapi_script,
)
from cosmic_dagster.config import ConfigError
from cosmic_dagster.domain.ledger import Ledger

CLIENT_ID = "abcdefghijklm"  # the id the emulator fixtures register (tests/sfapi/conftest.py)


def test_old_system_variables(key_files: tuple[Path, Path], private_pem: str) -> None:
    key_file, id_file = key_files

    creds = SfapiCredentials.from_env({"PATH_NERSC_ID": str(id_file), "PATH_NERSC_PRI_KEY": str(key_file)})

    assert creds.client_id == CLIENT_ID and creds.private_key == private_pem


def test_sfapi_variables_and_key_file_with_id_on_first_line(tmp_path: Path, private_pem: str) -> None:
    key_file = tmp_path / "sfapi.pem"
    key_file.write_text(f"{CLIENT_ID}\n{private_pem}")  # sfapi-client's key-file format
    key_file.chmod(0o600)

    from_line = SfapiCredentials.from_env({"SFAPI_KEY_FILE": str(key_file)})
    from_var = SfapiCredentials.from_env({"SFAPI_KEY_FILE": str(key_file), "SFAPI_CLIENT_ID": CLIENT_ID})

    assert from_line == from_var
    assert from_line.private_key == private_pem


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_key_readable_by_others_is_refused(key_files: tuple[Path, Path], private_pem: str, mode: int) -> None:
    key_file, id_file = key_files
    key_file.chmod(mode)

    with pytest.raises(ConfigError, match=f"mode {mode:o}.*chmod 600") as caught:
        SfapiCredentials.from_files(key_file, client_id_file=id_file)

    assert private_pem.splitlines()[3] not in str(caught.value)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "set PATH_NERSC_PRI_KEY"),
        ({"PATH_NERSC_PRI_KEY": "<key>"}, "no SFAPI client id"),
        ({"PATH_NERSC_PRI_KEY": "<key>", "SFAPI_KEY_FILE": "/other.pem"}, "name different files"),
        (
            {"PATH_NERSC_PRI_KEY": "<key>", "SFAPI_CLIENT_ID": "zzzzzzzzzzzzz", "PATH_NERSC_ID": "<id>"},
            "disagree",
        ),
        ({"PATH_NERSC_PRI_KEY": "/nonexistent/key.pem", "SFAPI_CLIENT_ID": CLIENT_ID}, "does not exist"),
        (
            {"PATH_NERSC_PRI_KEY": "<key>", "PATH_NERSC_ID": "/nonexistent/id.txt"},
            "cannot read the SFAPI client",
        ),
    ],
)
def test_missing_or_inconsistent_settings_say_what_to_fix(
    key_files: tuple[Path, Path], env: dict[str, str], message: str
) -> None:
    key_file, id_file = key_files
    resolved = {k: {"<key>": str(key_file), "<id>": str(id_file)}.get(v, v) for k, v in env.items()}

    with pytest.raises(ConfigError, match=message):
        SfapiCredentials.from_env(resolved)


def test_key_that_is_not_a_usable_pem_is_refused_without_echoing_it(tmp_path: Path) -> None:
    key_file = tmp_path / "bad.pem"
    key_file.write_text("-----BEGIN PRIVATE KEY-----\nbm90LWEta2V5LXNlY3JldA==\n-----END PRIVATE KEY-----\n")
    key_file.chmod(0o600)

    with pytest.raises(ConfigError, match="not an unencrypted PEM private key") as caught:
        SfapiCredentials.from_files(key_file, client_id=CLIENT_ID)

    assert "bm90LWEta2V5" not in str(caught.value)


def test_reprs_hide_the_key(credentials: SfapiCredentials, private_pem: str, tmp_path: Path) -> None:
    compute = SfapiCompute(Ledger(tmp_path / "l.sqlite"), credentials=credentials)

    for text in (repr(credentials), str(credentials), repr(compute)):
        assert "PRIVATE KEY" not in text and private_pem.splitlines()[2] not in text


def test_from_env_points_at_given_endpoints(key_files: tuple[Path, Path], tmp_path: Path) -> None:
    key_file, id_file = key_files
    env = {
        "PATH_NERSC_ID": str(id_file),
        "PATH_NERSC_PRI_KEY": str(key_file),
        "SFAPI_API_BASE_URL": "http://127.0.0.1:1/api/v1.2",
        "SFAPI_TOKEN_URL": "http://127.0.0.1:1/token",
    }

    compute = SfapiCompute.from_env(Ledger(tmp_path / "l.sqlite"), env, poll_interval_s=1.0)

    assert (compute.api_base_url, compute.token_url) == (env["SFAPI_API_BASE_URL"], env["SFAPI_TOKEN_URL"])
    assert compute.poll_interval_s == 1.0 and compute.credentials.client_id == CLIENT_ID


def test_unknown_machine_is_refused(credentials: SfapiCredentials, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown NERSC machine 'cori'"):
        SfapiCompute(Ledger(tmp_path / "l.sqlite"), credentials=credentials, machine="cori")


# --- the script as submitted ----------------------------------------------------------------------
def test_directives_are_read_in_long_and_short_forms() -> None:
    script = "\n".join(
        [
            "#!/bin/bash",
            "#SBATCH -J recon.a.1 --qos=regular",
            "#SBATCH --output /w/job.out  # trailing comment",
            '#SBATCH -t 00:10:00 -C gpu --exclusive --chdir="/w d"',
            "# plain comment",
            "",
            "echo hi",
            "#SBATCH --account=ignored_after_first_command",
        ]
    )

    assert sbatch_directives(script) == {
        "job-name": "recon.a.1",
        "qos": "regular",
        "output": "/w/job.out",
        "time": "00:10:00",
        "constraint": "gpu",
        "exclusive": "",
        "chdir": "/w d",
    }


def test_script_gets_name_output_and_env_before_the_first_command() -> None:
    spec = JobSpec(
        name="recon.k.12345678",
        script="#!/bin/bash\n#SBATCH --qos=debug\nset -e\necho go\n",
        workdir="/global/cfs/recon/k",
        env={"OMP_NUM_THREADS": "1", "LABEL": "a b"},
    )

    assert sfapi_script(spec) == (
        "#!/bin/bash\n"
        "#SBATCH --job-name=recon.k.12345678\n"
        "#SBATCH --output=/global/cfs/recon/k/job.out\n"
        "#SBATCH --qos=debug\n"
        "export OMP_NUM_THREADS=1\n"
        "export LABEL='a b'\n"
        "set -e\n"
        "echo go\n"
    )


def test_rendered_directives_are_kept() -> None:
    script = "#!/bin/bash\n#SBATCH --job-name=recon.k.1\n#SBATCH --output=/w/%j.log\necho go\n"
    spec = JobSpec(name="recon.k.1", script=script, workdir="/w")

    assert sfapi_script(spec) == script


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (JobSpec("a", "echo no shebang\n", "/w"), "must start with '#!'"),
        (JobSpec("a", "#!/bin/bash\n", "relative/dir"), "absolute path"),
        (JobSpec("a", "#!/bin/bash\n", "/w x"), "must not contain spaces"),
        (JobSpec("a b", "#!/bin/bash\n", "/w"), "only letters, digits"),
        (JobSpec("a", "#!/bin/bash\n#SBATCH -J other\n", "/w"), "differs from the job name"),
        (JobSpec("a", "#!/bin/bash\n", "/w", env={"BAD-NAME": "1"}), "environment variable name"),
    ],
)
def test_bad_job_specs_get_specific_errors(spec: JobSpec, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sfapi_script(spec)
