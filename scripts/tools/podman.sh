#!/usr/bin/env bash
# Tools for the container-image test (tests/image): podman, buildah, runc and debootstrap from Debian's packages,
# and a local Python base image (Debian + python3 + python3-venv, made with debootstrap and `podman import`),
# because this machine has no Docker engine and no image registry to pull python:3.12-slim from.
# Idempotent: quick when the tools and the image are present. Cached in podman's storage and as a tarball under
# $LCI_TOOLS/images, so a fresh checkout (CI) or a wiped podman storage reuses it.
source "$(dirname "$0")/../lib.sh"

SUITE="${LCI_BASE_SUITE:-bookworm}"                        # Debian 12: python3 is 3.11
BASE_IMAGE="${LCI_BASE_IMAGE:-localhost/lci-python-base:$SUITE-v1}"
CACHE_DIR="$LCI_TOOLS/images"
TARBALL="$CACHE_DIR/lci-python-base-$SUITE-v1.tar"

log() { echo "podman.sh: $*" >&2; }

need=()
for bin in podman buildah runc debootstrap; do command -v "$bin" >/dev/null || need+=("$bin"); done
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then log "missing ${need[*]} and not root: install them with apt-get"; exit 0; fi
  log "installing ${need[*]}"
  # With Debian's recommends: netavark, aardvark-dns and iptables publish ports (-p) for root containers.
  # A failed install is not fatal here: tests/image then skips, naming what is missing.
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman buildah runc debootstrap \
         >/dev/null; }; then
    log "could not install ${need[*]} with apt-get: tests/image will skip"
    exit 0
  fi
fi

# podman run in this machine needs runc and cgroupfs (no systemd); pass them on the command line (see tests/image).
podman_() { podman --cgroup-manager=cgroupfs --runtime runc "$@"; }

if podman_ image exists "$BASE_IMAGE"; then
  exit 0
fi

if [ ! -s "$TARBALL" ]; then
  # The mirror Debian's own apt uses on this machine; debootstrap's default otherwise.
  mirror="$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\/debian\)[[:space:]]*$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)"
  [ -n "$mirror" ] || mirror="$(awk '$1=="deb" && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null)"
  start=$SECONDS
  rootfs="$(mktemp -d "${TMPDIR:-/tmp}/lci-rootfs.XXXXXX")"
  trap 'rm -rf "$rootfs"' EXIT
  log "building the Python base image: debootstrap $SUITE (python3, python3-venv) ${mirror:-default mirror}"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$SUITE" "$rootfs" ${mirror:+"$mirror"} >"$rootfs.log" 2>&1 || { tail -n 30 "$rootfs.log" >&2; exit 1; }
  rm -f "$rootfs.log"
  # What an image doesn't need: package lists, caches, docs, logs.
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
         "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/var/log/*
  mkdir -p "$CACHE_DIR"
  tar --numeric-owner -C "$rootfs" -cf "$TARBALL.part" .
  mv "$TARBALL.part" "$TARBALL"
  rm -rf "$rootfs"; trap - EXIT
  log "debootstrap + tarball took $((SECONDS - start)) s"
fi

start=$SECONDS
podman_ import --quiet \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  "$TARBALL" "$BASE_IMAGE" >/dev/null
log "imported $BASE_IMAGE in $((SECONDS - start)) s"
