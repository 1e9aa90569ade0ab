#!/usr/bin/env bash
# A real OCI registry on loopback holding busybox images built from the host's static busybox,
# for running the quickstart without the internet:
#
#   scripts/local-registry.sh start DIR [PORT]   # prints the registry's host:port
#   scripts/local-registry.sh stop DIR
#
# Then `quickstart --registry-mirror docker.io=http://HOST:PORT` pulls `busybox`,
# `busybox:1.36` and `hello-httpd:1` (a busybox image whose Entrypoint serves HTTP on 8080)
# from it, as docker.io/library/<name>. Needs Debian's docker-registry (CNCF Distribution),
# umoci, skopeo and busybox-static.
set -euo pipefail

cmd="${1:?usage: $0 start|stop DIR [PORT]}"
dir="${2:?usage: $0 start|stop DIR [PORT]}"
port="${3:-5055}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"

case "$cmd" in
stop)
  [[ -f "$dir/registry.pid" ]] && kill "$(cat "$dir/registry.pid")" 2>/dev/null || true
  rm -f "$dir/registry.pid"
  exit 0
  ;;
start) ;;
*) echo "unknown command $cmd" >&2; exit 2 ;;
esac

for tool in docker-registry umoci skopeo; do
  command -v "$tool" >/dev/null || { echo "$tool is missing (Debian package: $tool)" >&2; exit 1; }
done
[[ -x /bin/busybox ]] || { echo "/bin/busybox is missing (Debian package busybox-static)" >&2; exit 1; }

cat >"$dir/config.yml" <<EOF
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $dir/storage}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$port}
EOF
docker-registry serve "$dir/config.yml" >"$dir/registry.log" 2>&1 &
echo $! >"$dir/registry.pid"
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && break
  sleep 0.1
done
curl -sf "http://127.0.0.1:$port/v2/" >/dev/null || { cat "$dir/registry.log" >&2; exit 1; }

# One layer: /bin/busybox with a link per applet, and the directories a container needs.
layout="$dir/layout"
rm -rf "$layout" "$dir/bundle"
umoci init --layout "$layout"
umoci new --image "$layout:base"
umoci unpack --rootless --image "$layout:base" "$dir/bundle" >/dev/null
rootfs="$dir/bundle/rootfs"
mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/tmp" "$rootfs/root" "$rootfs/var/www"
cp /bin/busybox "$rootfs/bin/busybox"
for applet in $(/bin/busybox --list); do
  [[ "$applet" == busybox ]] || ln -sf busybox "$rootfs/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
echo "hello from an image's entrypoint" >"$rootfs/var/www/index.html"
umoci repack --image "$layout:base" "$dir/bundle" >/dev/null
umoci config --image "$layout:base" --tag busybox \
  --config.env PATH=/bin --config.cmd sh
umoci config --image "$layout:base" --tag hello-httpd \
  --config.env PATH=/bin --config.workingdir /var/www \
  --config.entrypoint httpd --config.entrypoint -f --config.entrypoint -p \
  --config.entrypoint 8080 --config.entrypoint -h --config.entrypoint /var/www \
  --config.exposedports 8080/tcp

push() {
  skopeo copy --quiet --dest-tls-verify=false "oci:$layout:$1" "docker://127.0.0.1:$port/library/$2"
}
push busybox busybox:latest
push busybox busybox:1.36
push hello-httpd hello-httpd:1
echo "127.0.0.1:$port"
