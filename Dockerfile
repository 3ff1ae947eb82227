# One image for every stage: `docker run IMAGE kpp <command> ...`
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY contracts ./contracts
COPY producers ./producers
COPY streams ./streams
COPY sinks ./sinks
COPY simulator ./simulator
COPY stack ./stack
COPY kpp ./kpp
COPY schemas ./schemas
RUN pip install --no-cache-dir . && useradd --system --uid 10001 kpp && mkdir -p /var/lib/kpp && chown kpp /var/lib/kpp
USER 10001
ENV KPP_STATE_DIR=/var/lib/kpp
ENTRYPOINT []
CMD ["kpp", "--help"]
