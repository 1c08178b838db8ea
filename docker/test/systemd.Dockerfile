# The debootstrap base (base-image.sh) plus Debian's systemd and man-db packages, for the package
# test's `systemd-analyze verify` of pgssl's unit (tests/it/package.rs), which also looks up the
# unit's Documentation= man pages with `man`. Only Debian's mirror is reached.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update -q \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends systemd man-db \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb
