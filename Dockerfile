# A small image with warren and warrenctl:
#   docker build -t warren .
#   docker run -p 5672:5672 -p 15672:15672 -p 15692:15692 -v warren-data:/var/lib/warren warren
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin warren --bin warrenctl

FROM debian:bookworm-slim
RUN useradd --system --home /var/lib/warren warren \
    && mkdir -p /var/lib/warren && chown warren:warren /var/lib/warren
COPY --from=build /src/target/release/warren /src/target/release/warrenctl /usr/local/bin/
USER warren
WORKDIR /var/lib/warren
# guest/guest may log in from loopback only; set a default user for clients from outside.
ENV WARREN_DATA_DIR=/var/lib/warren \
    WARREN_DEFAULT_USER=admin \
    WARREN_DEFAULT_PASS=admin
EXPOSE 5672 15672 15692
VOLUME ["/var/lib/warren"]
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s \
    CMD ["warrenctl", "--user", "admin", "--password", "admin", "await_startup", "--timeout", "3"]
ENTRYPOINT ["warren"]
