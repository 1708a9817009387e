# One image for the Dagster processes of docker-compose.yaml: the code server (the default CMD; it
# also executes the runs), the daemon and the webserver; compose picks one with `command:`.
#   docker compose build            (or: docker build -t cosmic-dagster .)
# The code server is `cosmic-dagster-code-server`, which is `dagster api grpc` whose watch over dead
# run workers outlives a PostgreSQL outage (cosmic_dagster/instance/code_server.py); not `dagster
# code-server start`: deploy/dagster.yaml's run launcher asks the server that started a run whether
# it still runs it, which that proxy cannot answer for the runs of a previous child (see
# cosmic_dagster/instance/code_server_launcher.py).
#
# The base is pinned by exact tag. Add its digest (python:3.11.7-slim-bookworm@sha256:...) when
# you build: no registry could be reached where this file was written, so none could be looked up.
# 3.11.7 is also CI's interpreter, with which tests/deploy replays the install step below.
FROM python:3.11.7-slim-bookworm

# Owner of the secret files on the host: compose bind-mounts them as they are (mode 600).
ARG COSMIC_UID=10001

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/home \
    COSMIC_PROFILE=nersc \
    COSMIC_DATA_ROOT=/var/lib/cosmic

# Built outside the run directory, so that `-m cosmic_dagster.definitions` imports the installed
# package and not a second copy from the working directory.
WORKDIR /usr/src/cosmic-dagster
COPY pyproject.toml README.md ./
COPY cosmic_dagster ./cosmic_dagster
# The exact versions (dagster family, dagster-postgres, globus-sdk, sfapi-client) are pyproject's.
RUN pip install --no-cache-dir '.[postgres]'

RUN useradd --uid "$COSMIC_UID" --user-group --create-home --shell /usr/sbin/nologin cosmic \
    && mkdir -p "$DAGSTER_HOME/storage" "$COSMIC_DATA_ROOT" \
    && chown -R cosmic:cosmic "$DAGSTER_HOME" "$COSMIC_DATA_ROOT"

# Entrypoint: deploy/dagster.yaml reads DAGSTER_PG_PASSWORD from the environment only, so take it
# from the file DAGSTER_PG_PASSWORD_FILE names (a compose secret), then run the command.
RUN printf '%s\n' '#!/bin/sh' 'set -e' \
        'if [ -n "${DAGSTER_PG_PASSWORD_FILE:-}" ]; then' \
        '    DAGSTER_PG_PASSWORD="$(cat "$DAGSTER_PG_PASSWORD_FILE")"' \
        '    export DAGSTER_PG_PASSWORD' \
        'fi' \
        'exec "$@"' >/usr/local/bin/cosmic-env \
    && chmod 0755 /usr/local/bin/cosmic-env

WORKDIR /opt/cosmic-dagster
COPY deploy/workspace.yaml ./workspace.yaml
COPY deploy/dagster.yaml $DAGSTER_HOME/dagster.yaml

USER cosmic
EXPOSE 3000 4000
ENTRYPOINT ["cosmic-env"]
CMD ["cosmic-dagster-code-server", "-h", "0.0.0.0", "-p", "4000", \
     "-m", "cosmic_dagster.definitions", "--location-name", "cosmic_dagster"]
# For the default CMD; docker-compose.yaml sets the daemon's and the webserver's own.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["dagster", "api", "grpc-health-check", "-p", "4000"]
