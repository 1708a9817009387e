"""The container files: Dockerfile, .dockerignore, docker-compose.yaml and .env.example.

Docker does not run in CI, so the Dockerfile is checked by reading it and by replaying its install
step in a fresh venv (slow), and docker-compose.yaml is validated and normalised by the
``docker compose`` CLI plugin, which needs no daemon.
"""

from __future__ import annotations

import fnmatch
import functools
import importlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # a dependency of dagster
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {"postgres", "init", "code", "daemon", "webserver"}
DAGSTER_SERVICES = SERVICES - {"postgres"}
CODE_SECRETS = {"globus_client_secret", "nersc_client_id", "nersc_private_key"}
SECRET_NAME = re.compile(r"SECRET|PASSWORD|TOKEN|KEY|WEBHOOK", re.IGNORECASE)


def holds_secret(name: str) -> bool:
    """A variable whose value would be the secret itself (``*_FILE``, ``*_DIR``, ``PATH_*`` name files)."""
    names_a_file = name.endswith(("_FILE", "_DIR")) or name.startswith("PATH_")
    return bool(SECRET_NAME.search(name)) and not names_a_file


def skip_or_fail(message: str) -> None:
    """CI must have every tool these tests need: there a missing one fails instead of skipping."""
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


# --- the Dockerfile, parsed ------------------------------------------------------------------------
@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case
    args: str  # the rest of the logical line, continuation lines joined


@functools.cache
def dockerfile() -> tuple[Instruction, ...]:
    """Instructions of the Dockerfile: comments dropped, ``\\`` continuations joined as Docker does."""
    found, pending = [], ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += line.rstrip()[:-1]
            continue
        keyword, _, args = (pending + line).strip().partition(" ")
        found.append(Instruction(keyword.upper(), args.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return tuple(found)


def instructions(keyword: str) -> list[Instruction]:
    return [i for i in dockerfile() if i.keyword == keyword]


def exec_form(args: str) -> list[str]:
    assert args.startswith("["), f"not in exec form (without a shell, signals reach the process): {args}"
    return json.loads(args)


def image_cmd() -> list[str]:
    return exec_form(instructions("CMD")[-1].args)


def healthcheck_command() -> list[str]:
    (check,) = instructions("HEALTHCHECK")
    options, _, command = check.args.partition("CMD ")
    assert all(o.startswith("--") for o in options.split()), check.args
    return exec_form(command.strip())


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in instructions("ENV"):
        for item in shlex.split(instruction.args):
            name, _, value = item.partition("=")
            env[name] = value
    return env


def pip_installs() -> list[tuple[int, PurePosixPath, list[str]]]:
    """``(instruction index, WORKDIR, arguments after "pip install")`` of each pip install."""
    found, workdir = [], PurePosixPath("/")
    for index, instruction in enumerate(dockerfile()):
        if instruction.keyword == "WORKDIR":
            workdir = workdir / instruction.args
        elif instruction.keyword == "RUN":
            commands: list[list[str]] = [[]]  # the simple commands of the shell form
            for token in shlex.split(instruction.args):
                if token == "&&":
                    commands.append([])
                else:
                    commands[-1].append(token)
            for command in commands:
                argv = command[2:] if command[:3] == ["python", "-m", "pip"] else command
                if argv[:2] in (["pip", "install"], ["pip3", "install"]):
                    found.append((index, workdir, argv[2:]))
    return found


def copies() -> list[tuple[int, str, PurePosixPath]]:
    """``(instruction index, source in the build context, path in the image)`` of each COPY source."""
    env = image_env()
    found, workdir = [], PurePosixPath("/")
    for index, instruction in enumerate(dockerfile()):
        if instruction.keyword == "WORKDIR":
            workdir = workdir / instruction.args
        elif instruction.keyword == "COPY":
            *sources, dest = [a for a in shlex.split(instruction.args) if not a.startswith("--")]
            into = dest.endswith("/") or dest == "." or len(sources) > 1
            target = workdir / re.sub(r"\$\{?(\w+)\}?", lambda m: env[m.group(1)], dest)
            found += [(index, s, target / Path(s).name if into else target) for s in sources]
    return found


def copied_to(source: str) -> PurePosixPath:
    (path,) = [path for _, s, path in copies() if s == source]
    return path


def base_python() -> str:
    """``3.11`` for ``python:3.11.7-slim-bookworm``."""
    (base,) = instructions("FROM")
    match = re.fullmatch(r"python:(\d+\.\d+)\.\d+-\S+", base.args.split()[0])
    assert match, f"not built on an official python image: {base.args}"
    return match.group(1)


# --- the Dockerfile --------------------------------------------------------------------------------
def test_base_image_is_pinned_by_exact_version_tag() -> None:
    (base,) = instructions("FROM")
    image = base.args.split()[0].split("@")[0]
    tag = image.rpartition(":")[2]
    assert re.fullmatch(r"\d+\.\d+\.\d+(-[a-z0-9.]+)*", tag), f"{image}: pin major.minor.patch, never latest"


def test_image_runs_as_non_root_with_a_health_check() -> None:
    """The last USER comes before the process starts and is not root; the health check probes the
    default CMD, the code server (compose sets the daemon's and the webserver's own)."""
    keywords = [i.keyword for i in dockerfile()]
    last_user = max(n for n, k in enumerate(keywords) if k == "USER")
    assert last_user < min(keywords.index("CMD"), keywords.index("ENTRYPOINT"))
    assert dockerfile()[last_user].args.split(":")[0] not in ("root", "0")
    command = image_cmd()
    assert command[0] == "cosmic-dagster-code-server", "the code server CodeServerRunLauncher needs"
    port = command[command.index("-p") + 1]
    assert healthcheck_command() == ["dagster", "api", "grpc-health-check", "-p", port]


def test_image_holds_the_production_instance_and_workspace() -> None:
    env = image_env()
    assert copied_to("deploy/dagster.yaml") == PurePosixPath(env["DAGSTER_HOME"], "dagster.yaml")
    assert copied_to("deploy/workspace.yaml").name == "workspace.yaml"
    assert env["COSMIC_PROFILE"] == "nersc"


def test_pip_installs_only_the_project_with_its_pins() -> None:
    """Every version comes from pyproject.toml: the install names nothing but the copied project."""
    installs = pip_installs()
    assert installs, "no pip install in the Dockerfile"
    for index, workdir, args in installs:
        assert [a for a in args if not a.startswith("-")] == [".[postgres]"], args
        assert {a for a in args if a.startswith("-")} == {"--no-cache-dir"}, args
        copied = {path for at, _, path in copies() if at < index}
        for needed in ("pyproject.toml", "README.md", "cosmic_dagster"):
            assert workdir / needed in copied, f"{needed} is not copied before the install"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for requirement in [*project["dependencies"], *project["optional-dependencies"]["postgres"]]:
        name = re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0]
        if name.startswith("dagster") or name in ("globus-sdk", "sfapi-client"):
            assert re.fullmatch(rf"{name}==\d+\.\d+\.\d+", requirement), f"not pinned: {requirement}"


def test_no_secret_is_baked_into_the_image() -> None:
    for name, value in image_env().items():
        assert not (holds_secret(name) and value), f"ENV {name} holds a secret"
    for arg in instructions("ARG"):
        name, _, value = arg.args.partition("=")
        assert not (holds_secret(name) and value), f"ARG {name} has a secret default"
    assert not instructions("ADD"), "ADD can fetch URLs and unpack archives: use COPY"
    for _, source, _ in copies():
        assert not re.search(r"\.env\b|secret|\.pem$|\.key$", source), source


def test_entrypoint_takes_the_postgres_password_from_its_file(tmp_path: Path) -> None:
    """deploy/dagster.yaml reads DAGSTER_PG_PASSWORD from the environment only; the entrypoint sets it
    from the compose secret file and passes everything else through."""
    assert exec_form(instructions("ENTRYPOINT")[-1].args) == ["cosmic-env"]
    (writes,) = [i for i in instructions("RUN") if "/usr/local/bin/cosmic-env" in i.args]
    script = tmp_path / "cosmic-env"
    subprocess.run(["sh", "-c", writes.args.replace("/usr/local/bin/cosmic-env", str(script))], check=True)
    password = tmp_path / "pg_password"
    password.write_text("s3cret with spaces\n")

    def run(*argv: str, **env: str) -> subprocess.CompletedProcess[str]:
        env["PATH"] = os.environ["PATH"]
        return subprocess.run([script, *argv], env=env, capture_output=True, text=True)

    shown = run("sh", "-c", 'printf %s "$DAGSTER_PG_PASSWORD"', DAGSTER_PG_PASSWORD_FILE=str(password))
    assert (shown.returncode, shown.stdout) == (0, "s3cret with spaces")
    passed = run("sh", "-c", 'printf "%s|" "$DAGSTER_PG_PASSWORD" "$@"', "-", "a b", DAGSTER_PG_PASSWORD="x")
    assert (passed.returncode, passed.stdout) == (0, "x|a b|")
    missing = run("true", DAGSTER_PG_PASSWORD_FILE=str(tmp_path / "missing"))
    assert missing.returncode != 0, "started without its database password"


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides."""
    parts = path.split("/")
    ignored = False
    for pattern in patterns:
        glob = pattern.lstrip("!").strip("/")
        if any(fnmatch.fnmatch("/".join(parts[:n]), glob) for n in range(1, len(parts) + 1)):
            ignored = not pattern.startswith("!")
    return ignored


def test_dockerignore_admits_only_what_the_image_copies() -> None:
    """An allow-list, so that .env, secrets and keys never reach the build context."""
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [p.strip() for p in lines if p.strip() and not p.startswith("#")]
    for _, source, _ in copies():
        files = [ROOT / source] if (ROOT / source).is_file() else (ROOT / source).rglob("*.py")
        for file in files:
            if "__pycache__" not in file.parts:
                assert not dockerignored(file.relative_to(ROOT).as_posix(), patterns), file
    leaks = [".env", "secrets/pg_password", "nersc_private_key.pem", ".venv/bin/python", ".git/config",
             "tests/conftest.py", "cosmic_dagster/__pycache__/cli.cpython-311.pyc"]  # fmt: skip
    for leak in leaks:
        assert dockerignored(leak, patterns), f"{leak} would be sent to the build"


# --- docker-compose.yaml ---------------------------------------------------------------------------
def compose_yaml() -> dict[str, Any]:
    """The file as written: anchors merged, nothing interpolated."""
    return yaml.safe_load((ROOT / "docker-compose.yaml").read_text())


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``docker compose config`` of the file with .env.example as .env: validated against the
    Compose schema, interpolated, every default filled in."""
    plugin = ["docker", "compose", "version"]
    if shutil.which("docker") is None or subprocess.run(plugin, capture_output=True).returncode:
        skip_or_fail("the docker compose CLI plugin is not installed (it validates docker-compose.yaml)")
    project = tmp_path_factory.mktemp("compose")
    shutil.copy(ROOT / "docker-compose.yaml", project)
    shutil.copy(ROOT / ".env.example", project / ".env")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COSMIC_", "DAGSTER_", "COMPOSE_"))}
    config = ["docker", "compose", "config", "--format", "json"]
    done = subprocess.run(config, cwd=project, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_compose_runs_one_image_in_dependency_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == SERVICES
    assert len({services[s]["image"] for s in DAGSTER_SERVICES}) == 1
    assert len({services[s]["build"]["context"] for s in DAGSTER_SERVICES}) == 1
    postgres = services["postgres"]["image"]
    assert re.fullmatch(r"postgres:15\.\d+-[a-z]+", postgres), f"pin an exact tag: {postgres}"
    conditions = {name: {d: c["condition"] for d, c in s.get("depends_on", {}).items()}
                  for name, s in services.items()}  # fmt: skip
    assert conditions == {
        "postgres": {},
        "init": {"postgres": "service_healthy"},
        "code": {"init": "service_completed_successfully"},
        "daemon": {"init": "service_completed_successfully", "code": "service_healthy"},
        "webserver": {"init": "service_completed_successfully", "code": "service_healthy"},
    }
    assert services["init"]["command"] == ["cosmic-dagster", "deploy", "pools"]
    assert services["init"]["restart"] == "no"


def test_compose_commands_and_health_checks_agree_with_the_image(compose: dict[str, Any]) -> None:
    services = compose["services"]
    code = services["code"]
    assert code["command"] == image_cmd()
    assert code["healthcheck"]["test"] == ["CMD", *healthcheck_command()]
    port = code["command"][code["command"].index("-p") + 1]
    workspace = str(copied_to("deploy/workspace.yaml"))
    for name in DAGSTER_SERVICES:
        env = services[name]["environment"]
        assert (env["COSMIC_CODE_SERVER_HOST"], env["COSMIC_CODE_SERVER_PORT"]) == ("code", port)
        assert env["DAGSTER_PG_HOST"] == "postgres"
        assert env["DAGSTER_PG_PASSWORD_FILE"] == "/run/secrets/pg_password"
    daemon, web = services["daemon"], services["webserver"]
    assert daemon["command"] == ["dagster-daemon", "run", "-w", workspace]
    assert daemon["healthcheck"]["test"] == ["CMD", "cosmic-env", "dagster-daemon", "liveness-check"]
    assert web["command"] == ["dagster-webserver", "-w", workspace, "-h", "0.0.0.0", "-p", "3000"]
    assert "http://127.0.0.1:3000/server_info" in " ".join(web["healthcheck"]["test"])
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["init"]["healthcheck"] == {"disable": True}
    (published,) = web["ports"]
    assert (published["host_ip"], published["target"]) == ("127.0.0.1", 3000), "the UI has no login"
    assert not [s for s in SERVICES - {"webserver"} if "ports" in services[s]]


def test_compose_gives_secrets_and_data_to_the_code_server_only(compose: dict[str, Any]) -> None:
    services = compose["services"]
    mounted = {name: {s["source"]: s["target"] for s in service.get("secrets", [])}
               for name, service in services.items()}  # fmt: skip
    assert set(mounted["code"]) == CODE_SECRETS | {"pg_password"}
    assert all(set(mounted[name]) == {"pg_password"} for name in SERVICES - {"code"}), mounted
    code_env = services["code"]["environment"]
    assert code_env["GLOBUS_CLIENT_SECRET_FILE"] == mounted["code"]["globus_client_secret"]
    assert code_env["PATH_NERSC_ID"] == mounted["code"]["nersc_client_id"]
    assert code_env["PATH_NERSC_PRI_KEY"] == mounted["code"]["nersc_private_key"]
    for name, service in services.items():
        leaked = [v for v, value in (service.get("environment") or {}).items() if holds_secret(v) and value]
        assert not leaked, f"{name}: secrets belong in files, not in the environment: {leaked}"
    volumes = {v["target"]: v for v in services["code"]["volumes"]}
    beamline = volumes[code_env["COSMIC_BEAMLINE_ROOT"]]
    assert (beamline["type"], beamline.get("read_only")) == ("bind", True)
    assert volumes[code_env["COSMIC_ENDPOINTS_FILE"]].get("read_only") is True
    data_root = image_env()["COSMIC_DATA_ROOT"]
    assert volumes[data_root]["type"] == "volume", "the state must outlive the container"
    for name in SERVICES - {"code"}:
        targets = {v["target"] for v in services[name].get("volumes", [])}
        assert not targets & {data_root, code_env["COSMIC_BEAMLINE_ROOT"]}, name


def test_env_example_documents_every_setting() -> None:
    """Each variable compose interpolates or the code's settings read is explained in .env.example,
    and the example sets no secret."""
    example = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"\b[A-Z][A-Z0-9_]+\b", example))
    # ${NAME} is interpolated by compose; $${NAME} is left to the container's shell.
    interpolated = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", (ROOT / "docker-compose.yaml").read_text()))
    settings = set(re.findall(r"\"(COSMIC_[A-Z0-9_]+)\"", (ROOT / "cosmic_dagster/config.py").read_text()))
    credentials = {"GLOBUS_CLIENT_ID", "PATH_NERSC_ID", "PATH_NERSC_PRI_KEY"}
    missing = (interpolated | settings | credentials) - documented
    assert not missing, f"not explained in .env.example: {sorted(missing)}"
    for line in example.splitlines():
        name, _, value = line.partition("=")
        assert line.startswith("#") or not value or not holds_secret(name), f"{name}: use a secret file"


# --- the files the image copies --------------------------------------------------------------------
def test_instance_and_workspace_files_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """deploy/dagster.yaml passes Dagster's schema and its classes' own (nothing connects);
    deploy/workspace.yaml, with compose's variables, names the code server compose runs."""
    from dagster._config import process_config
    from dagster._core.instance.ref import InstanceRef
    from dagster._core.remote_origin import GrpcServerCodeLocationOrigin
    from dagster._core.workspace.load import location_origins_from_yaml_paths

    env = compose_yaml()["x-dagster"]["environment"]
    for name in ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "COSMIC_CODE_SERVER_HOST", "COSMIC_CODE_SERVER_PORT"):
        monkeypatch.setenv(name, env[name])
    for name in ("DAGSTER_PG_USER", "DAGSTER_PG_DB", "DAGSTER_PG_PASSWORD"):
        monkeypatch.setenv(name, "test")
    ref = InstanceRef.from_dir(str(ROOT / "deploy"))
    assert ref.storage_data.module_name == "dagster_postgres"
    for data in (ref.storage_data, ref.run_coordinator_data, ref.run_launcher_data):
        klass = getattr(importlib.import_module(data.module_name), data.class_name)
        result = process_config(klass.config_type(), yaml.safe_load(data.config_yaml) or {})
        assert result.success, f"{data.class_name}: {result.errors}"

    (origin,) = location_origins_from_yaml_paths([str(ROOT / "deploy" / "workspace.yaml")])
    assert isinstance(origin, GrpcServerCodeLocationOrigin)
    assert (origin.host, str(origin.port), origin.location_name) == (
        env["COSMIC_CODE_SERVER_HOST"],
        env["COSMIC_CODE_SERVER_PORT"],
        "cosmic_dagster",
    )


# --- the install step, replayed --------------------------------------------------------------------
@pytest.mark.slow
def test_image_install_step_works_in_a_fresh_venv(tmp_path: Path) -> None:
    """The Dockerfile's pip install, run in a new venv of the base image's Python from a copy of
    what the Dockerfile copies (pip's cache allowed): the code loads from the install, and every
    command the image and compose run exists with the options they give it."""
    version = base_python()
    python = shutil.which(f"python{version}") or (sys.executable if sys.version.startswith(version) else None)
    if python is None:
        skip_or_fail(f"no python{version} here, the base image's Python")

    installs = pip_installs()
    build = tmp_path / "build"
    for at, source, path in copies():
        if at < installs[0][0]:
            target = build / path.relative_to(installs[0][1])
            if (ROOT / source).is_dir():
                ignore = shutil.ignore_patterns("__pycache__", "*.py[co]")
                shutil.copytree(ROOT / source, target, ignore=ignore, dirs_exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / source, target)

    venv = tmp_path / "venv"
    subprocess.run([str(python), "-m", "venv", str(venv)], check=True)
    bindir = venv / "bin"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PIP_NO_CACHE_DIR")}
    env.update(image_env(), PATH=f"{bindir}{os.pathsep}{env['PATH']}")
    for _, workdir, args in installs:
        pip_args = [a for a in args if a != "--no-cache-dir"]  # the cache makes the replay quick
        subprocess.run(
            [bindir / "python", "-m", "pip", "install", "-q", *pip_args],
            cwd=build / workdir.relative_to(installs[0][1]),
            env=env,
            check=True,
        )
    subprocess.run([bindir / "python", "-m", "pip", "check"], env=env, check=True)

    home = tmp_path / "home"
    home.mkdir()
    run_env = {**env, "COSMIC_PROFILE": "local", "COSMIC_DATA_ROOT": str(tmp_path / "data")}
    run_env["DAGSTER_HOME"] = str(home)
    probe = "import cosmic_dagster.definitions, dagster_postgres; print(cosmic_dagster.__file__)"
    python_c = [bindir / "python", "-c", probe]
    loaded = subprocess.run(python_c, cwd=tmp_path, env=run_env, capture_output=True, text=True)
    assert loaded.returncode == 0, loaded.stderr
    assert Path(loaded.stdout.strip()).is_relative_to(venv), "imported the source tree, not the install"

    ours = ("cosmic-dagster", "cosmic-dagster-code-server")
    for entry_point in ("dagster", "dagster-daemon", "dagster-webserver", *ours):
        assert (bindir / entry_point).is_file(), entry_point
    commands = [image_cmd(), healthcheck_command()]
    for service in compose_yaml()["services"].values():
        commands += [service.get("command") or [], (service.get("healthcheck") or {}).get("test", [])[1:]]
    for command in dict.fromkeys(tuple(c[1:] if c[:1] == ["cosmic-env"] else c) for c in commands):
        if not command or command[0].startswith("python") or not (bindir / command[0]).is_file():
            continue  # python -c, pg_isready: nothing of ours
        # --help acts once all options are parsed: an unknown option still fails.
        argv = [bindir / command[0], *command[1:], "--help"]
        done = subprocess.run(argv, cwd=tmp_path, env=run_env, capture_output=True, text=True)
        assert done.returncode == 0, f"{' '.join(command)}: {done.stderr}"

    # The operator commands work from the install alone (their YAML is package data): the demo's
    # services start from a wheel-like install in another folder than the source tree.
    for command in (["demo", "--help"], ["deploy", "--help"]):
        done = subprocess.run([bindir / "cosmic-dagster", *command], cwd=tmp_path, env=run_env, text=True)
        assert done.returncode == 0, command
    services = (
        "import os, sys; from pathlib import Path\n"
        "from cosmic_dagster.cli.services import DagsterServices, free_port, prepare_home\n"
        "home = Path(os.environ['DAGSTER_HOME']); prepare_home(home)\n"
        "with DagsterServices(os.environ, home / 'logs', free_port()) as running:\n"
        "    print(running.workspace, running.procs['daemon'].poll(), running.procs['webserver'].poll())\n"
    )
    started = subprocess.run(
        [bindir / "python", "-c", services], cwd=tmp_path, env=run_env, capture_output=True, text=True
    )
    assert started.returncode == 0, started.stderr
    workspace, daemon, webserver = started.stdout.split()
    assert Path(workspace).is_relative_to(venv) and (daemon, webserver) == ("None", "None")
