#!/bin/sh
# tests/apt_install.sh PACKAGE...: Debian packages the integration tests run (`make test-tools`, as root),
# installed without starting or enabling a service, so the host's services are left as found.
#
# Debian's maintainer scripts start what they install (through invoke-rc.d / deb-systemd-invoke) and enable
# it at boot (deb-systemd-helper, update-rc.d): docker.io would leave dockerd and containerd running,
# prometheus :9090, and its recommended node exporter :9100. The tests start dockerd and Prometheus as their
# own processes and stop them (tests/docker_engine.py, tests/servers.py), so here:
#   - only packages not yet installed, without their recommends (which bring node-exporter, avahi, udev);
#   - a policy-rc.d that denies every start for the length of the install, unless the host has one of its
#     own (then that one decides, untouched);
#   - every unit the install enabled, disabled again (systemd's and the SysV links alike), so no later boot
#     starts it; a package's later upgrade keeps it disabled.
set -eu

missing=""
for p in "$@"; do
	dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
[ -n "$missing" ] || exit 0

enabled() {
	systemctl list-unit-files --state=enabled --no-legend --no-pager 2>/dev/null | awk '{print $1}' | sort
}
started_at_boot() {  # SysV init scripts linked to start in a runlevel
	ls /etc/rc[2-5].d 2>/dev/null | sed -n 's/^S[0-9]*//p' | sort -u
}
before=$(mktemp)
before_rc=$(mktemp)
enabled >"$before"
started_at_boot >"$before_rc"

policy=/usr/sbin/policy-rc.d
ours=""
if [ ! -e "$policy" ]; then
	ours=$policy
	trap 'rm -f "$ours" "$before" "$before_rc"' EXIT
	printf '#!/bin/sh\n# tests/apt_install.sh: no service starts while the tests'"'"' tools install\nexit 101\n' >"$policy"
	chmod 755 "$policy"
else
	trap 'rm -f "$before" "$before_rc"' EXIT
fi

apt-get update -q
# shellcheck disable=SC2086  # one word per package
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing

for unit in $(enabled | comm -13 "$before" -); do
	echo "apt_install.sh: $unit was enabled by the install: disabling it (the tests start their own)"
	systemctl disable --quiet --no-reload "$unit" 2>/dev/null || systemctl disable --quiet "$unit"
done
for script in $(started_at_boot | comm -13 "$before_rc" -); do
	echo "apt_install.sh: /etc/init.d/$script was linked to start at boot by the install: disabling it"
	update-rc.d "$script" disable >/dev/null
done
