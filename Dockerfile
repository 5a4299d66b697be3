# The receiver's image: `receiver serve` on 0.0.0.0:8000, SQLite under /data by default.
#   docker build -t rivya-receiver .
#   docker run -p 8000:8000 -v receiver-data:/data -e RECEIVER_SIGNING_SECRETS=whsec_... rivya-receiver

# Build stage: the wheel and its pinned dependencies, in a virtual environment we copy out.
FROM python:3.11.7-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY receiver ./receiver
# receiver/openapi.json links to the document here; the wheel takes its content.
COPY docs/openapi.json ./docs/
COPY deploy/install-venv.sh ./deploy/
RUN sh deploy/install-venv.sh /opt/receiver

# Runtime stage: Python and that environment, nothing else; never root.
FROM python:3.11.7-slim-bookworm
RUN groupadd --system --gid 10001 receiver \
    && useradd --system --uid 10001 --gid receiver --no-create-home \
        --shell /usr/sbin/nologin receiver \
    && mkdir /data \
    && chown receiver:receiver /data
COPY --from=build /opt/receiver /opt/receiver
ENV PATH=/opt/receiver/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RECEIVER_DATABASE_URL=sqlite+aiosqlite:////data/receiver.db
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["receiver", "probe", "http://127.0.0.1:8000/healthz"]
# Exec form: the receiver is PID 1 and gets SIGTERM itself, for a graceful stop.
ENTRYPOINT ["receiver", "serve", "--host", "0.0.0.0"]
CMD ["--port", "8000"]
