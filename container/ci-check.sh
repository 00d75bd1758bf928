#!/usr/bin/env bash
# CI's container check (run by .ci/run after the tests, as root): builds the image with
# container/build.sh from the debug binary the tests built, plays container/kube.yaml and waits
# for the sidecar's /readyz to answer 200 and for the sandbox app to hold the example's users.
# Where podman can't be installed or can't run containers it prints "container check skipped:
# <why>" and exits 0; it exits 1 only when the image builds and runs but the pod fails.
set -uo pipefail
cd "$(dirname "$0")/.."
export CONTAINERS_CONF="$PWD/container/containers.conf"
bin="${CARGO_TARGET_DIR:-$PWD/target}/debug/provisiond"
image=localhost/provisiond:ci
pod=provisiond-example

skip() { echo "container check skipped: $*"; exit 0; }
fail() { echo "container check FAILED: $*"; exit 1; }

[ "$(id -u)" = 0 ] || skip "not root (the check probes the pod's loopback with nsenter)"
[ -x "$bin" ] || skip "no debug binary at $bin"
command -v nsenter >/dev/null || skip "nsenter is not installed"
if ! command -v podman >/dev/null || ! command -v runc >/dev/null; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc; } >/dev/null 2>&1 \
    || skip "podman and runc could not be installed with apt-get"
fi

out=$(PROVISIOND_IMAGE=$image timeout 300 container/build.sh "$bin" 2>&1) \
  || skip "podman cannot build images here: $(printf '%s\n' "$out" | tail -n 3)"
size=$(podman image inspect --format '{{.Size}}' "$image")
echo "image $image: $((size / 1000000)) MB (debug binary, debug info stripped)"
out=$(timeout 120 podman run --rm --network none "$image" --version 2>&1) \
  || skip "podman cannot run containers here: $(printf '%s\n' "$out" | tail -n 3)"
echo "container runs: $out"

# The example pod, on our tag; removed again on every way out (pod, secret, volumes).
yaml=$(mktemp)
cleanup() {
  timeout 120 podman kube down "$yaml" >/dev/null 2>&1
  podman secret rm provisiond-token >/dev/null 2>&1
  podman volume rm provisiond-config provisiond-token provisiond-state >/dev/null 2>&1
  podman rmi "$image" >/dev/null 2>&1
  rm -f "$yaml"
}
trap cleanup EXIT
sed "s|localhost/provisiond:latest|$image|" container/kube.yaml > "$yaml"
# Leftovers of an earlier run would make kube play refuse the secret.
podman pod rm -f "$pod" >/dev/null 2>&1
podman secret rm provisiond-token >/dev/null 2>&1
podman volume rm provisiond-config provisiond-token provisiond-state >/dev/null 2>&1
timeout 120 podman kube play --network none "$yaml" || fail "podman kube play container/kube.yaml"

# GET on the pod's loopback (no curl in the image): from the host, inside the pod's network
# namespace, with bash's /dev/tcp. Prints the status line and body.
get() {
  local pid
  pid=$(podman inspect --format '{{.State.Pid}}' "$pod-provisiond" 2>/dev/null) || return 1
  [ "$pid" -gt 0 ] 2>/dev/null || return 1
  timeout 5 nsenter -t "$pid" -n bash -c \
    'exec 3<>/dev/tcp/127.0.0.1/$1 && printf "GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n" "$2" >&3 && cat <&3' _ "$1" "$2" 2>/dev/null
}
ready=""; users=""
for _ in $(seq 60); do
  [ -n "$ready" ] || { get 9464 /readyz | head -n 1 | grep -q ' 200' && ready=1; }
  [ -n "$users" ] || { get 8080 /Users | grep -q '"totalResults":2' && users=1; }
  [ -n "$ready" ] && [ -n "$users" ] && break
  sleep 1
done
if [ -z "$ready" ] || [ -z "$users" ]; then
  podman ps -a --pod
  echo "-- sidecar log"; podman logs "$pod-provisiond" 2>&1 | tail -n 20
  [ -n "$ready" ] || fail "the sidecar's /readyz did not answer 200 within 60 s"
  fail "the sandbox app does not hold the example's 2 users after 60 s"
fi
echo "container check: pod $pod ran; /readyz 200; the sidecar provisioned 2 users into the app"
