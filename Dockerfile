# centrifuge-asgi's standalone server: `centrifuge-asgi serve` with the server, redis and
# nats extras, installed only from the committed lock (requirements/dev.txt, hashes
# checked). docs/deploy.md explains how to build, configure and run it.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: the wheel, and a virtualenv with the locked runtime dependencies ----------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY requirements/dev.txt requirements/dev.txt
COPY deploy/docker/runtime_lock.py deploy/docker/runtime_lock.py
COPY pyproject.toml README.md ./
# the lock's entries that [server,redis,nats] and the build backend need, with their hashes
RUN python deploy/docker/runtime_lock.py requirements/dev.txt --extras server,redis,nats \
        > /tmp/runtime.txt \
    && python deploy/docker/runtime_lock.py requirements/dev.txt --packages hatchling \
        > /tmp/build.txt \
    && python -m venv /opt/build \
    && /opt/build/bin/pip install --require-hashes --no-deps -r /tmp/build.txt \
    && python -m venv /opt/centrifuge \
    && /opt/centrifuge/bin/pip install --require-hashes --no-deps -r /tmp/runtime.txt
COPY src src
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /wheels . \
    && /opt/centrifuge/bin/pip install --no-deps /wheels/*.whl \
    && /opt/centrifuge/bin/pip check

# ---- chat: the chat example (examples/chat, FastAPI from the demo lock), for compose ----
FROM build AS chat-build
COPY requirements/demo.txt requirements/demo.txt
RUN python deploy/docker/runtime_lock.py requirements/demo.txt --packages fastapi \
        > /tmp/chat.txt \
    && /opt/centrifuge/bin/pip install --require-hashes --no-deps -r /tmp/chat.txt \
    && /opt/centrifuge/bin/pip check

FROM ${PYTHON_IMAGE} AS chat
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin centrifuge
COPY --from=chat-build /opt/centrifuge /opt/centrifuge
COPY examples/chat /opt/chat
ENV PATH=/opt/centrifuge/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    HOST=0.0.0.0 PORT=8000
USER centrifuge
EXPOSE 8000
CMD ["python", "/opt/chat/app.py"]

# ---- server (the default target): the virtualenv on a slim base, unprivileged --------
FROM ${PYTHON_IMAGE} AS server
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin centrifuge \
    && mkdir /centrifugo && chown centrifuge:centrifuge /centrifugo
COPY --from=build /opt/centrifuge /opt/centrifuge
COPY deploy/docker/healthcheck.py /opt/healthcheck.py
ENV PATH=/opt/centrifuge/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CENTRIFUGO_HEALTH_ENABLED=true
WORKDIR /centrifugo
USER centrifuge
EXPOSE 8000
# 200 while serving, 503 while draining (see healthcheck.py for the port it asks)
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "/opt/healthcheck.py"]
# `docker stop` sends SIGTERM to PID 1, the server itself (exec form, no shell between):
# clients get 3001 "shutdown" and the server exits within shutdown.timeout (default 30 s;
# give `docker stop -t` / stop_grace_period a little more).
STOPSIGNAL SIGTERM
ENTRYPOINT ["centrifuge-asgi"]
# A missing config file only warns: CENTRIFUGO_* variables alone configure the server.
CMD ["serve", "-c", "/centrifugo/config.json"]
