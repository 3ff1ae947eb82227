# One image for every stage: `docker run IMAGE kpp <command> ...`
# Run-time only: the Python package with the lz4 and zstd Kafka compression extras. The dev
# stack (`kpp stack`: Java, the Kafka and VictoriaMetrics downloads) is never installed here;
# its Python module comes along inert because `kpp demo` imports its settings.
# tests/deploy/test_image.py builds this environment the same way (a fresh venv, the same
# pip install) and runs `kpp --help` in it.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY contracts ./contracts
COPY kafka_io ./kafka_io
COPY runtime ./runtime
COPY producers ./producers
COPY streams ./streams
COPY sinks ./sinks
COPY simulator ./simulator
COPY stack ./stack
COPY kpp ./kpp
COPY schemas ./schemas
RUN pip install --no-cache-dir ".[lz4,zstd]" && useradd --system --uid 10001 kpp && mkdir -p /var/lib/kpp && chown kpp /var/lib/kpp
USER 10001
ENV KPP_STATE_DIR=/var/lib/kpp
# The image has no curl: the stage running as the main process is asked for its /healthz on
# the address it listens on (kpp/healthcheck.py); commands without one count as healthy.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 CMD ["python", "-m", "kpp.healthcheck"]
ENTRYPOINT []
CMD ["kpp", "--help"]
