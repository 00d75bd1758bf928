#!/usr/bin/env bash
# Builds provisiond's image without registry access: the binary cargo already built (glibc)
# plus the shared libraries `ldd` lists, FROM scratch, `podman build --pull=never`. Same
# layout and defaults as container/Containerfile (uid 65532, /provisiond, state volume
# /var/lib/provisiond, PROVISIOND_CONFIG, JSON logs).
#
#   container/build.sh [BINARY]     BINARY: else $PROVISIOND_BIN, else target/release/provisiond
#   PROVISIOND_IMAGE=...            the tag (default localhost/provisiond:latest)
#   CONTAINERS_CONF=container/containers.conf   on hosts that need runc / lower ulimits
set -euo pipefail

bin=${1:-${PROVISIOND_BIN:-target/release/provisiond}}
image=${PROVISIOND_IMAGE:-localhost/provisiond:latest}
[ -x "$bin" ] || { echo "build.sh: no executable at $bin (cargo build --release first)" >&2; exit 2; }
command -v podman >/dev/null || { echo "build.sh: podman is not installed" >&2; exit 2; }

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
root="$ctx/root"
install -d "$root/etc/provisiond" "$ctx/state"
install -d -m 1777 "$root/tmp"
install -m 0755 "$bin" "$root/provisiond"
# A debug build carries ~100 MB of debug info the image has no use for.
if command -v strip >/dev/null; then strip --strip-debug "$root/provisiond"; fi

# The dynamic loader and every library the binary links, at the paths ldd resolves them to
# (symlinks followed: the image gets the files themselves).
ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | while read -r lib; do
  install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
done
# CA certificates for the LDAP client's native roots (HTTPS uses the built-in webpki roots).
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
fi
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$root/etc/group"

cat > "$ctx/Containerfile" <<'CONTAINERFILE'
FROM scratch
COPY root/ /
# COPY of a directory copies its contents: the empty state/ makes /var/lib/provisiond itself,
# owned by the user (a fresh volume mounted there starts with this owner and mode).
COPY --chown=65532:65532 state/ /var/lib/provisiond/
ENV PROVISIOND_CONFIG=/etc/provisiond/provisiond.toml \
    PROVISIOND_LOG_FORMAT=json
USER 65532:65532
VOLUME ["/var/lib/provisiond"]
ENTRYPOINT ["/provisiond"]
CMD ["run"]
CONTAINERFILE
chmod 0700 "$ctx/state"

podman build --pull=never -t "$image" -f "$ctx/Containerfile" "$ctx"
echo "built $image ($(podman image inspect --format '{{.Size}}' "$image") bytes)"
