# remediator daemon image. Build: docker build -t remediator .
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY remediator ./remediator
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
RUN useradd --system --uid 10001 remediator
COPY --from=build /install /usr/local
COPY playbooks /etc/remediator/playbooks
USER 10001
ENV REMEDIATOR_PLAYBOOKS=/etc/remediator/playbooks \
    REMEDIATOR_DATA_DIR=/var/lib/remediator
EXPOSE 8080
ENTRYPOINT ["remediator"]
CMD ["serve", "--listen", "0.0.0.0:8080"]
