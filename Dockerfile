# jobscope: multi-stage build; the runtime image holds the binary and nothing else it does not
# need, and runs as an unprivileged user.
#   docker build -t jobscope .
FROM rust:1.94-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY vendor ./vendor
COPY src ./src
COPY console ./console
COPY migrations ./migrations
COPY openapi ./openapi
COPY bench ./bench
RUN cargo build --release --locked --bin jobscope \
 && cp target/release/jobscope /usr/local/bin/jobscope

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/jobscope --create-home jobscope
COPY --from=build /usr/local/bin/jobscope /usr/local/bin/jobscope
USER jobscope
WORKDIR /var/lib/jobscope
ENV HOST=0.0.0.0 PORT=8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --retries=5 CMD curl -fsS http://127.0.0.1:8080/v1/health || exit 1
ENTRYPOINT ["jobscope"]
CMD ["serve"]
