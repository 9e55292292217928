#!/usr/bin/env bash
# Builds the Debian packages of rollcall from a built binary:
#   rollcall           the binary (operator CLI, server and endpoint)
#   rollcall-server    the server's systemd unit and /etc/rollcall/server.toml
#   rollcall-endpoint  the endpoint's systemd unit and /etc/rollcall/endpoint.toml
#
#   cargo build --release -p rollcall
#   tools/packaging/deb/build.sh [--binary target/release/rollcall] [--out target/deb]
#
# Needs dpkg-deb (every Debian and Ubuntu machine has it). DEB_COMPRESS picks dpkg-deb's
# compressor (default xz; "none" builds fast, for tests).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
root="$(cd "$here/../.." && pwd)"
binary="$root/target/release/rollcall"
out="$root/target/deb"
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -x "$binary" ] || { echo "no binary at $binary: cargo build --release -p rollcall" >&2; exit 1; }
command -v dpkg-deb >/dev/null || { echo "dpkg-deb not found" >&2; exit 1; }
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)"
arch="$(dpkg --print-architecture 2>/dev/null || echo amd64)"
compress="${DEB_COMPRESS:-xz}"
maintainer="rollcall maintainers <rollcall@localhost>"
mkdir -p "$out"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# control NAME DEPENDS DESCRIPTION SUMMARY [EXTRA]
control() {
  local dir="$1" name="$2" depends="$3" summary="$4" description="$5" extra="${6:-}"
  mkdir -p "$dir/DEBIAN"
  local size
  size="$(du -sk --exclude=DEBIAN "$dir" | cut -f1)"
  {
    echo "Package: $name"
    echo "Version: $version"
    echo "Architecture: $arch"
    echo "Maintainer: $maintainer"
    echo "Installed-Size: $size"
    [ -n "$depends" ] && echo "Depends: $depends"
    [ -n "$extra" ] && echo "$extra"
    echo "Section: admin"
    echo "Priority: optional"
    echo "Description: $summary"
    echo "$description" | fold -s -w 72 | sed 's/ *$//; s/^/ /; s/^ $/ ./'
  } > "$dir/DEBIAN/control"
}

copyright() {
  mkdir -p "$1/usr/share/doc/$2"
  printf 'rollcall\nLicense: Apache-2.0\nOn Debian systems the full text is in /usr/share/common-licenses/Apache-2.0.\n' \
    > "$1/usr/share/doc/$2/copyright"
}

# rollcall: the binary.
p="$work/rollcall"
install -d "$p/usr/bin"
if command -v strip >/dev/null; then
  strip --strip-debug -o "$p/usr/bin/rollcall" "$binary"
else
  install -m 0755 "$binary" "$p/usr/bin/rollcall"
fi
chmod 0755 "$p/usr/bin/rollcall"
copyright "$p" rollcall
control "$p" rollcall "" "ask every machine of a fleet a question, in seconds" \
  "rollcall asks every machine of a fleet a question and has the answer in seconds, then acts on the machines that matched. Endpoints of a subnet form a ring and pass questions and package files peer to peer. This package holds the rollcall binary: the operator CLI, the server and the endpoint agent. Install rollcall-server or rollcall-endpoint to run one as a service."

# rollcall-server and rollcall-endpoint: a unit, a config file and maintainer scripts.
for role in server endpoint; do
  p="$work/rollcall-$role"
  install -d "$p/lib/systemd/system" "$p/etc/rollcall" "$p/DEBIAN"
  install -m 0644 "$here/systemd/rollcall-$role.service" "$p/lib/systemd/system/"
  install -m 0640 "$here/etc/$role.toml" "$p/etc/rollcall/$role.toml"
  echo "/etc/rollcall/$role.toml" > "$p/DEBIAN/conffiles"
  copyright "$p" "rollcall-$role"
  for script in postinst prerm postrm; do
    install -m 0755 "$here/deb/$role.$script" "$p/DEBIAN/$script"
  done
done
control "$work/rollcall-server" rollcall-server "rollcall (= $version), passwd" \
  "rollcall server as a systemd service" \
  "The rollcall server keeps the fleet's rings, asks questions, signs actions and serves operators. It runs unprivileged as the rollcall user, with its state under /var/lib/rollcall. Make the CA first: sudo -u rollcall rollcall ca init --dir /var/lib/rollcall/ca"
control "$work/rollcall-endpoint" rollcall-endpoint "rollcall (= $version)" \
  "rollcall endpoint agent as a systemd service" \
  "The rollcall endpoint agent answers the fleet's questions and runs the actions the server signed. Write the server's address and a join token into /etc/rollcall/endpoint.toml and restart the service: that is all a new machine needs." \
  "Recommends: nftables"

for name in rollcall rollcall-server rollcall-endpoint; do
  dpkg-deb --root-owner-group -Z"$compress" --build "$work/$name" \
    "$out/${name}_${version}_${arch}.deb" >/dev/null
  echo "$out/${name}_${version}_${arch}.deb"
done
