# The image the compose stack's `cutover` service runs: the binary and the client programs it
# drives (pg_dump/psql 15, mysqldump/mysql, rsync, ssh).
FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin cutover

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-client-15 default-mysql-client rsync openssh-client ca-certificates sqlite3 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/cutover /usr/local/bin/cutover
ENTRYPOINT ["cutover"]
