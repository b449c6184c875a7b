# Relay in a container: gunicorn with gevent workers (gunicorn.conf.py), as a non-root user.
#   docker build -t relay .
#   docker run -p 3000:3000 -e RELAY_API_KEYS=sk-... -e OLLAMA_BASE_URL=http://host:11434 relay
# HOST is 0.0.0.0 so the port can be published; Relay then refuses to start without
# RELAY_API_KEYS (set RELAY_ALLOW_OPEN=true to run open on purpose).
# See docs/operations.md "Containers".
FROM python:3.11-slim-trixie

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# gevent, greenlet and the rest install as wheels: no compiler in the image.
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

RUN groupadd --system --gid 10001 relay \
    && useradd --system --uid 10001 --gid relay --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin relay \
    && install -d -o relay -g relay -m 750 /data /data/files

# The code stays owned by root: the relay user can read it, not change it.
COPY . .

ENV HOST=0.0.0.0 \
    PORT=3000 \
    RELAY_DATABASE_URL=sqlite:////data/relay.db \
    RELAY_ENV_FILE=

USER 10001:10001
EXPOSE 3000
VOLUME ["/data"]

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "scripts/healthcheck.py"]

# gunicorn: SIGTERM lets streams in flight finish (graceful_timeout 30 s), SIGHUP reloads.
STOPSIGNAL SIGTERM
CMD ["gunicorn", "--config", "gunicorn.conf.py", "wsgi:app"]
