#!/usr/bin/env bash
# Builds the container image the offline way, in one command, idempotently: both binaries
# built here in release mode, the C libraries they link (glibc, libgcc, the loader), a
# passwd/group entry for uid 65532, CA certificates and a /tmp, on `FROM scratch`
# (Dockerfile.local). No registry is needed. Tags etcd-operator:dev, or $IMAGE.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE="${IMAGE:-etcd-operator:dev}"

if ! docker version >/dev/null 2>&1; then
  echo "scripts/image.sh: no Docker Engine answers" >&2
  exit 2
fi
cargo build --release -p etcd-operator -p etcd-server

ctx=target/image
rm -rf "$ctx"
root="$ctx/rootfs"
mkdir -p "$root/usr/local/bin" "$root/etc/ssl/certs" "$root/tmp"
# Owned by the image's user: the data directory and home.
mkdir -p "$ctx/owned/var/lib/etcd" "$ctx/owned/home/nonroot"
touch "$ctx/owned/var/lib/etcd/.keep" "$ctx/owned/home/nonroot/.keep"
bins=(target/release/etcd-operator target/release/etcd-server)
for b in "${bins[@]}"; do
  cp "$b" "$root/usr/local/bin/"
  strip "$root/usr/local/bin/$(basename "$b")" 2>/dev/null || true
done
# The shared libraries and the dynamic loader, at the paths the binaries ask for.
for lib in $(ldd "${bins[@]}" | awk '/=> \// {print $3} /^\t\/.*ld-linux/ {print $1}' | sort -u); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' \
  >"$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
fi
chmod 1777 "$root/tmp"
cp Dockerfile.local "$ctx/Dockerfile"
docker build -q -t "$IMAGE" "$ctx" >/dev/null 2>"$ctx/build.log" || {
  cat "$ctx/build.log" >&2
  exit 1
}
echo "built $IMAGE ($(docker image inspect -f '{{.Size}}' "$IMAGE") bytes)"
