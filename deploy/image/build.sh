#!/usr/bin/env bash
# Builds the sitesync container image without a registry: `FROM scratch`, holding the
# host-built `sitesync-node` and `sitesyncctl`, the shared libraries `ldd` says they load
# (with the dynamic loader), and the directories the node writes, owned by its user.
#
#   deploy/image/build.sh [TAG]        # default tag: sitesync:dev (or $SITESYNC_IMAGE)
#
# SITESYNC_SKIP_CARGO=1 uses the binaries already in target/release without building.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
tag="${1:-${SITESYNC_IMAGE:-sitesync:dev}}"
# The user both binaries run as in the image (no /etc/passwd entry needed).
uid=10001

if [[ "${SITESYNC_SKIP_CARGO:-0}" != 1 ]]; then
  (cd "$root" && cargo build --release --locked -p sitesync-node -p sitesync-control-plane)
fi
target="${CARGO_TARGET_DIR:-$root/target}/release"
binaries=("$target/sitesync-node" "$target/sitesyncctl")
for binary in "${binaries[@]}"; do
  [[ -x "$binary" ]] || { echo "error: $binary is missing; build it first" >&2; exit 1; }
done

context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
stage="$context/stage"
mkdir -p "$stage/usr/local/bin" "$stage/var/lib/sitesync" "$stage/etc/sitesync/pki" "$stage/srv/catalog" "$stage/tmp"
install -m 0755 "${binaries[@]}" "$stage/usr/local/bin/"
# Debug information stays on the host; the image carries the code only.
if command -v strip >/dev/null 2>&1; then
  strip --strip-debug "$stage"/usr/local/bin/*
fi

# Every library either binary loads, at the path the loader looks for it, resolving
# symbolic links so the image holds the files themselves. `ldd` prints
# "name => /path (addr)" for libraries and "/path (addr)" for the loader.
for binary in "${binaries[@]}"; do ldd "$binary"; done \
  | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// && $1 !~ /:$/ { print $1 }' \
  | sort -u \
  | while read -r library; do
      mkdir -p "$stage$(dirname "$library")"
      cp -L "$library" "$stage$library"
      echo "library: $library" >&2
    done
# The loader's usual path on this architecture, when the binaries name it through a link.
if [[ -e /lib64 && ! -e "$stage/lib64" && -d "$stage/usr/lib64" ]]; then
  ln -s usr/lib64 "$stage/lib64"
fi

# The archive records owners itself (no root needed here): root for everything, the node's
# user for the directories it writes (data, certificates, a catalog directory).
python3 - "$stage" "$context/rootfs.tar" "$uid" <<'PY'
import sys, tarfile
stage, out, uid = sys.argv[1], sys.argv[2], int(sys.argv[3])
owned = {"./var/lib/sitesync": 0o750, "./etc/sitesync/pki": 0o750, "./srv/catalog": 0o755}
def owner(info):
    info.uid, info.gid, info.uname, info.gname = 0, 0, "", ""
    if info.name in owned:
        info.uid = info.gid = uid
        info.mode = owned[info.name]
    elif info.name == "./tmp":
        info.mode = 0o1777
    return info
with tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as tar:
    tar.add(stage, arcname=".", filter=owner)
PY
cp "$root/deploy/image/Dockerfile" "$context/Dockerfile"

docker build --quiet \
  --label "org.opencontainers.image.title=sitesync" \
  --label "org.opencontainers.image.revision=$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)" \
  -t "$tag" "$context" >/dev/null
# The image runs: both binaries start and print their versions.
docker run --rm "$tag" --version
docker run --rm --entrypoint sitesyncctl "$tag" --version
echo "built $tag ($(docker image inspect -f '{{.Size}}' "$tag") bytes)" >&2
