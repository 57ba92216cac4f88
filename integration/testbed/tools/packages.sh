#!/usr/bin/env bash
# Installs the Debian packages the testbed runs beside the binaries build.sh makes: containerd
# and its ctr client (the node's image pulls), skopeo (a second registry client), chromium and
# a font (the status page test renders the page headless, as a phone would show it), and git,
# gnupg and openssh-client (the bundler signs and verifies commits with them). Packages
# already present are left alone, so a warm run costs one dpkg query.
#
# Used by `make testbed`; needs root (CI and the development machine run as root) and apt.
set -euo pipefail

want=(containerd skopeo chromium fonts-dejavu-core git gnupg openssh-client)
missing=()
for p in "${want[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "testbed: packages ${missing[*]} are missing; install them as root: apt-get install ${missing[*]}" >&2
	exit 1
fi
echo "testbed: apt-get install ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# No init system runs here: keep the package's service from being started on install.
printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d.ferry
chmod +x /usr/sbin/policy-rc.d.ferry
[ -e /usr/sbin/policy-rc.d ] || { cp /usr/sbin/policy-rc.d.ferry /usr/sbin/policy-rc.d; trap 'rm -f /usr/sbin/policy-rc.d' EXIT; }
rm -f /usr/sbin/policy-rc.d.ferry
apt-get update -qq >&2 || true
apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
