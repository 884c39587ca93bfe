#!/usr/bin/env bash
# Prepares a Debian 12 host for fastban, as root, idempotently:
#   Debian packages (BCC, kernel headers, the lab's SIP server and tools: Kamailio with its
#   TLS module, sipp, and socat, the lab's TCP->TLS relay for sipp, which has no TLS here),
#   /lib/modules/$(uname -r)/{build,source} when the running kernel ships no headers,
#   bpffs at /sys/fs/bpf.
# Says what it could not do and exits non-zero only when fastban cannot work at all.
set -u

say() { echo "host-setup: $*"; }

if [ "$(id -u)" != 0 ]; then
    say "must run as root (sudo make ...): BCC, XDP and network namespaces need it"
    exit 1
fi

packages=(
    python3 python3-venv python3-dev build-essential
    python3-bpfcc libbpfcc bpfcc-tools linux-headers-amd64
    iproute2 iputils-ping ethtool tcpdump nftables ipset iptables
    kamailio kamailio-tls-modules sip-tester sipvicious socat openssl
    chromium chromium-driver prometheus
    redis-server
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null || say "apt-get update failed; trying with the lists there are"
    if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/fastban-apt.log 2>&1; then
        say "apt-get install failed, see /tmp/fastban-apt.log"
        exit 1
    fi
fi

# The kamailio, prometheus and redis-server packages start servers on the host's ports 5060,
# 9090 and 6379; the lab and the tests run their own.
for service in kamailio prometheus redis-server; do
    if command -v systemctl >/dev/null && systemctl is-active -q "$service" 2>/dev/null; then
        systemctl stop "$service" >/dev/null 2>&1 && systemctl disable "$service" >/dev/null 2>&1
    fi
done

kver=$(uname -r)
moddir=/lib/modules/$kver
if [ -e "$moddir/build/include/linux/kconfig.h" ] || [ -e "$moddir/build/include/generated/autoconf.h" ]; then
    :
else
    amd64=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n 1)
    common=$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -n 1)
    if [ -z "$amd64" ] || [ -z "$common" ]; then
        say "no kernel headers for $kver and no Debian linux-headers-amd64 tree in /usr/src; BCC cannot compile"
        exit 1
    fi
    mkdir -p "$moddir"
    ln -sfn "$amd64" "$moddir/build"
    ln -sfn "$common" "$moddir/source"
    say "kernel $kver has no headers: using $amd64 (build) and $common (source)"
fi

if ! mountpoint -q /sys/fs/bpf; then
    if mount -t bpf bpf /sys/fs/bpf; then
        say "mounted bpffs at /sys/fs/bpf"
    else
        say "could not mount bpffs at /sys/fs/bpf; bans will not outlive the process"
    fi
fi
exit 0
