# The light agent: Dagster daemon + webserver + our code, no reconstruction hardware needed.
# It copies with Globus and submits reconstructions through SFAPI (COSMIC_PROFILE=nersc), so it
# needs neither the raw data nor a GPU (the same role as the old Prefect agent container).
#
#   docker build -t cosmic-dagster .
#   docker run -d --name cosmic-daemon  --env-file .env -v cosmic-home:/opt/dagster/home \
#       -v ./nersc:/nersc:ro cosmic-dagster
#   docker run -d --name cosmic-web -p 3000:3000 --env-file .env -v cosmic-home:/opt/dagster/home \
#       cosmic-dagster dagster-webserver -w workspace.yaml -h 0.0.0.0 -p 3000
#   # beamline side, optional (push trigger; give the daemon the same COSMIC_SENSOR_GRACE_S):
#   docker run -d --name cosmic-watch -e COSMIC_SENSOR_GRACE_S=30 -v /data/beamline:/beamline:ro \
#       cosmic-dagster cosmic-dagster watch --root /beamline --url http://cosmic-web:3000
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DAGSTER_HOME=/opt/dagster/home \
    COSMIC_PROFILE=nersc \
    COSMIC_DATA_ROOT=/opt/dagster/home/cosmic

WORKDIR /opt/cosmic-dagster
COPY pyproject.toml README.md ./
COPY cosmic_dagster ./cosmic_dagster
RUN pip install --no-cache-dir '.[postgres]' \
    && useradd --create-home --uid 1000 cosmic \
    && mkdir -p "$DAGSTER_HOME" && chown cosmic "$DAGSTER_HOME"
COPY workspace.yaml ./
COPY dagster.yaml "$DAGSTER_HOME"/dagster.yaml

USER cosmic
EXPOSE 3000
CMD ["dagster-daemon", "run", "-w", "workspace.yaml"]
