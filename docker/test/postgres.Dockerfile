# A stand-in for the stock `postgres` image, built offline from Debian's postgresql package on the
# debootstrap base (docker/test/run.sh): the same contract the compose file relies on — initdb on
# first start with POSTGRES_PASSWORD for the `postgres` superuser, scram-sha-256 from any address,
# listening on 5432, data in /var/lib/postgresql/data.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENV PGDATA=/var/lib/postgresql/data
RUN mkdir -p "$PGDATA" && chown postgres:postgres "$PGDATA" && chmod 0700 "$PGDATA"
VOLUME ["/var/lib/postgresql/data"]
USER postgres
EXPOSE 5432
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
