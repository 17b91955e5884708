#!/usr/bin/env bash
# A throwaway local "VPS" for end-to-end tests: a blank Debian 13 (trixie) guest under QEMU (KVM if usable, else TCG: no KVM
# needed), reachable over SSH on 127.0.0.1. See docs/local-vps.md.
#
#   vps.sh image          build the cached base image if missing or if its recipe changed
#   vps.sh start          boot a FRESH guest (copy-on-write overlay over the base), wait for SSH
#   vps.sh up             keep a guest running with a PERSISTENT disk: reuse the running guest,
#                         else boot the overlay kept from before (or a new one); for the
#                         `local` stack, whose state says what the disk holds
#   vps.sh stop           power the guest off and delete its disk (safe when it is not running;
#                         VPS_KEEP_DISK=1 keeps the disk for the next `vps.sh up`)
#   vps.sh ssh [-- CMD]   run CMD in the guest (as ssh does: words joined, run by the remote shell)
#   vps.sh env            print the connection settings as KEY=VALUE lines
#   vps.sh status         print VPS_STATE=running|stopped (exit 0 when running, 1 otherwise)
#   vps.sh clean          stop the guest and delete the cached image, key and run directory
#
# VPS_ACCEL=auto (default: KVM if it boots the guest, else TCG), kvm or tcg.
#
# A private network between guests (test/e2e/multi-host.test.ts): VPS_PRIVATE_NET=GROUP:PORT
# (a multicast group, e.g. 230.0.0.1:12345) and VPS_PRIVATE_ADDRESS=A.B.C.D/NN give the guest a
# second NIC, eth1, on QEMU's multicast socket netdev bound to 127.0.0.1: every guest started
# with the same VPS_PRIVATE_NET is on one Ethernet segment, no bridge and no root needed. Its
# MAC is 52:54:00 and the address's last three bytes. eth1 gets the address statically
# (/etc/network/interfaces, so it survives a reboot of a kept disk). The guest keeps its
# user-mode eth0 (apt, the forwarded ports).
#
# stdout carries only KEY=VALUE lines (eval-able; values never contain spaces); progress and
# errors go to stderr.
set -euo pipefail

readonly SUITE=trixie
# The guest's OS as the program's hostOs setting names it (printed by `vps.sh env`).
readonly HOST_OS=debian-13
readonly RECIPE_VERSION=2
readonly GUEST_PACKAGES=systemd-sysv,openssh-server,linux-image-cloud-amd64,ifupdown,isc-dhcp-client,iproute2,ca-certificates,sudo,python3
readonly GUEST_HOSTNAME=fastapi-edge-vps
readonly KERNEL_CMDLINE="root=/dev/vda rw console=ttyS0 net.ifnames=0"
# Packages the image must NOT contain: provisioning them is the job of the program under test.
readonly MUST_BE_ABSENT="nginx nginx-common certbot python3-certbot python3-fastapi python3-uvicorn"

CACHE_ROOT=$(realpath -m "${FASTAPI_EDGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fastapi-edge}")
VPS_CACHE_DIR=$CACHE_ROOT/vps
VPS_HOST=127.0.0.1
VPS_USER=root
VPS_SSH_PORT=${VPS_SSH_PORT:-2222}
VPS_HTTP_PORT=${VPS_HTTP_PORT:-8080}
VPS_HTTPS_PORT=${VPS_HTTPS_PORT:-8443}
VPS_ACME_HTTP_PORT=${VPS_ACME_HTTP_PORT:-5002}
VPS_RUN_DIR=$(realpath -m "${VPS_RUN_DIR:-$CACHE_ROOT/run/vps-$VPS_SSH_PORT}")
VPS_DISK_SIZE=${VPS_DISK_SIZE:-3G}
VPS_MEMORY=${VPS_MEMORY:-2048}
VPS_CPUS=${VPS_CPUS:-2}
VPS_BOOT_TIMEOUT=${VPS_BOOT_TIMEOUT:-180}
# Extra forwards, comma separated QEMU hostfwd rules; each must bind 127.0.0.1, e.g.
# VPS_EXTRA_HOSTFWD=tcp:127.0.0.1:9000-:8000
VPS_EXTRA_HOSTFWD=${VPS_EXTRA_HOSTFWD:-}
VPS_PRIVATE_NET=${VPS_PRIVATE_NET:-}
VPS_PRIVATE_ADDRESS=${VPS_PRIVATE_ADDRESS:-}

KEY=$VPS_CACHE_DIR/id_ed25519
BASE=$VPS_CACHE_DIR/base.raw
KERNEL=$VPS_CACHE_DIR/vmlinuz
INITRD=$VPS_CACHE_DIR/initrd.img
HOST_KEY_PUB=$VPS_CACHE_DIR/ssh_host_ed25519_key.pub
STAMP=$VPS_CACHE_DIR/recipe.sha256
BUILD_LOG=$VPS_CACHE_DIR/build.log
PIDFILE=$VPS_RUN_DIR/qemu.pid
OVERLAY=$VPS_RUN_DIR/disk.qcow2
CONSOLE_LOG=$VPS_RUN_DIR/console.log
QEMU_LOG=$VPS_RUN_DIR/qemu.log

BUILD_TMP=
ROOTFS=

log() { printf 'vps: %s\n' "$*" >&2; }
die() { printf 'vps: error: %s\n' "$*" >&2; exit 1; }
now() { printf '%s' "${EPOCHREALTIME/,/.}"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
# Copies stdin to stdout, each line prefixed with the seconds elapsed since $1 (for build.log).
stamp_lines() {
  local t0=${1/[.,]/} line us
  while IFS= read -r line; do
    us=$((${EPOCHREALTIME/[.,]/} - t0))
    printf '[%4d.%d] %s\n' $((us / 1000000)) $((us / 100000 % 10)) "$line"
  done
}

check_settings() {
  local v
  for v in VPS_SSH_PORT VPS_HTTP_PORT VPS_HTTPS_PORT VPS_ACME_HTTP_PORT VPS_MEMORY VPS_CPUS VPS_BOOT_TIMEOUT; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a number, got '${!v}'"
  done
  local rule
  local -a rules
  if [[ -n $VPS_EXTRA_HOSTFWD ]]; then
    IFS=, read -r -a rules <<<"$VPS_EXTRA_HOSTFWD"
    for rule in "${rules[@]}"; do
      [[ $rule =~ ^(tcp|udp):127\.0\.0\.1:[0-9]+-:[0-9]+$ ]] \
        || die "VPS_EXTRA_HOSTFWD rule '$rule' must look like tcp:127.0.0.1:HOSTPORT-:GUESTPORT"
    done
  fi
  if [[ -n $VPS_PRIVATE_NET || -n $VPS_PRIVATE_ADDRESS ]]; then
    [[ $VPS_PRIVATE_NET =~ ^2(2[4-9]|3[0-9])\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}:[0-9]{1,5}$ ]] \
      || die "VPS_PRIVATE_NET must be a multicast GROUP:PORT such as 230.0.0.1:12345, got '$VPS_PRIVATE_NET'"
    [[ $VPS_PRIVATE_ADDRESS =~ ^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})/([0-9]{1,2})$ ]] \
      || die "VPS_PRIVATE_ADDRESS must be A.B.C.D/NN such as 10.0.9.11/24, got '$VPS_PRIVATE_ADDRESS'"
  fi
}

# The private NIC's MAC address: 52:54:00 and the last three bytes of VPS_PRIVATE_ADDRESS.
private_mac() {
  local b c d
  IFS=./ read -r _ b c d _ <<<"$VPS_PRIVATE_ADDRESS"
  printf '52:54:00:%02x:%02x:%02x' "$b" "$c" "$d"
}

# eth1 with VPS_PRIVATE_ADDRESS, now and at every boot (idempotent).
configure_private_nic() {
  [[ -n $VPS_PRIVATE_ADDRESS ]] || return 0
  ssh "${SSH_OPTS[@]}" "$VPS_USER@$VPS_HOST" bash -s -- "$VPS_PRIVATE_ADDRESS" <<'EOF_GUEST'
set -euo pipefail
address=$1
if ! grep -q '^iface eth1 ' /etc/network/interfaces; then
  printf '\nauto eth1\niface eth1 inet static\n    address %s\n' "$address" >>/etc/network/interfaces
fi
ip -o -4 addr show dev eth1 | grep -q " ${address%/*}/" || ifup eth1
ip -o -4 addr show dev eth1 | grep -q " ${address%/*}/"
EOF_GUEST
}

# Installs the Debian packages providing the given commands when one is missing (root only).
ensure_commands() {
  local -a missing=()
  local pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  ((${#missing[@]} == 0)) && return 0
  ((EUID == 0)) || die "missing packages: ${missing[*]} (install them, or run as root)"
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2
}

# --- the host's Debian sources and apt settings, reused for debootstrap and inside the guest ----

# "URI SUITE COMPONENT" for each of the host's Debian ${SUITE}* package indexes.
host_debian_sources() {
  local out
  # shellcheck disable=SC2016 # apt's own $(FIELD) placeholders, not shell expansions
  out=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT) $(IDENTIFIER)' 2>/dev/null \
    | awk -v s="$SUITE" '$4 == "Packages" && ($2 == s || index($2, s "-") == 1) { print $1, $2, $3 }' \
    | sort -u -k2,2 -k1,1 -k3,3) || true
  if [[ -z $out ]]; then
    out=$(printf '%s\n' "http://deb.debian.org/debian/ $SUITE main" \
      "http://deb.debian.org/debian/ $SUITE-updates main" \
      "http://deb.debian.org/debian-security/ $SUITE-security main")
  fi
  if [[ -n ${VPS_DEBIAN_MIRROR:-} ]]; then
    out=$(awk -v m="${VPS_DEBIAN_MIRROR%/}/" '$2 !~ /-security$/ { $1 = m } { print }' <<<"$out")
  fi
  printf '%s\n' "$out"
}

# The mirror debootstrap uses: the one serving the plain suite.
host_main_mirror() {
  awk -v s="$SUITE" '$2 == s { print $1; exit }' <<<"$SOURCES"
}

# One deb822 file: one stanza per mirror (the main one first), listing that mirror's suites.
guest_sources() {
  local uri suites comps
  while read -r uri; do
    suites=$(awk -v u="$uri" '$1 == u && !seen[$2]++ { printf "%s%s", sep, $2; sep = " " }' <<<"$SOURCES")
    comps=$(awk -v u="$uri" '$1 == u && !seen[$3]++ { printf "%s%s", sep, $3; sep = " " }' <<<"$SOURCES")
    printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: %s\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n' \
      "$uri" "$suites" "$comps"
  done < <(awk '!seen[$1]++ { print $1 }' <<<"$SOURCES")
}

# The host's proxy and Release-date settings, as an apt.conf snippet. A proxy on the host's
# loopback is reached from the guest as 10.0.2.2 (QEMU user networking).
host_apt_conf() {
  local key val
  for key in Acquire::http::Proxy Acquire::https::Proxy Acquire::Check-Valid-Until Acquire::Check-Date; do
    val=
    eval "$(apt-config shell val "$key" 2>/dev/null)" || true
    [[ -n $val ]] || continue
    if [[ $1 == guest ]]; then
      val=$(sed -E 's#^([a-z]+://([^/@]*@)?)(127\.0\.0\.1|localhost)([:/]|$)#\110.0.2.2\4#' <<<"$val")
    fi
    printf '%s "%s";\n' "$key" "$val"
  done
}

host_proxy_env() {
  local p=
  eval "$(apt-config shell p Acquire::http::Proxy 2>/dev/null)" || true
  [[ -n $p && $p != DIRECT ]] && export http_proxy=$p
  p=
  eval "$(apt-config shell p Acquire::https::Proxy 2>/dev/null)" || true
  [[ -n $p && $p != DIRECT ]] && export https_proxy=$p
  return 0
}

# --- image -----------------------------------------------------------------------------------

# Everything done to the debootstrapped tree. Its text is part of the recipe hash.
customize_rootfs() {
  local root=$1
  printf '%s\n' "$GUEST_HOSTNAME" >"$root/etc/hostname"
  printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost ip6-loopback\n' \
    "$GUEST_HOSTNAME" >"$root/etc/hosts"
  printf '/dev/vda\t/\text4\tdefaults,errors=remount-ro\t0\t1\n' >"$root/etc/fstab"
  printf 'auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet dhcp\n' \
    >"$root/etc/network/interfaces"
  # debootstrap copied the build host's resolver; dhclient rewrites this at boot.
  rm -f "$root/etc/resolv.conf"
  printf 'nameserver 10.0.2.3\n' >"$root/etc/resolv.conf"

  # Exactly one apt source file, the host's Debian mirror(s).
  rm -f "$root/etc/apt/sources.list" "$root"/etc/apt/sources.list.d/*
  guest_sources >"$root/etc/apt/sources.list.d/debian.sources"
  local conf
  conf=$(host_apt_conf guest)
  if [[ -n $conf ]]; then
    printf '// From the build host (mirror access settings).\n%s\n' "$conf" \
      >"$root/etc/apt/apt.conf.d/90fastapi-edge-host"
  fi

  # Root logs in with the cached key only.
  printf '%s\n' '# fastapi-edge e2e guest: root by key only' 'PermitRootLogin prohibit-password' \
    'PubkeyAuthentication yes' 'PasswordAuthentication no' 'KbdInteractiveAuthentication no' \
    'UseDNS no' >"$root/etc/ssh/sshd_config.d/10-fastapi-edge-e2e.conf"
  install -d -m 700 "$root/root/.ssh"
  install -m 600 "$KEY.pub" "$root/root/.ssh/authorized_keys"

  # Like a fresh cloud image: no package lists until the first apt-get update.
  chroot "$root" apt-get clean
  rm -rf "$root"/var/lib/apt/lists/*
  install -d "$root/var/lib/apt/lists/partial"
}

recipe_hash() {
  {
    printf 'recipe=%s suite=%s variant=minbase size=%s\npackages=%s\n' \
      "$RECIPE_VERSION" "$SUITE" "$VPS_DISK_SIZE" "$GUEST_PACKAGES"
    printf 'sources:\n%s\n' "$SOURCES"
    printf 'aptconf:\n%s\n' "$(host_apt_conf guest)"
    printf 'key:\n%s\n' "$(cat "$KEY.pub")"
    declare -f customize_rootfs guest_sources host_apt_conf build_image
  } | sha256sum | cut -d' ' -f1
}

image_is_current() {
  [[ -s $BASE && -s $KERNEL && -s $INITRD && -s $KEY && -s $KEY.pub && -s $STAMP ]] \
    && [[ $(cat "$STAMP") == "$(recipe_hash)" ]]
}

cleanup_build() {
  if [[ -n $ROOTFS && -d $ROOTFS ]]; then
    local m
    # Anything debootstrap or chroot left mounted inside the tree, deepest first.
    while read -r m; do
      umount -l "$m" 2>/dev/null || true
    done < <(findmnt -rn -o TARGET | awk -v r="$ROOTFS" 'index($0, r) == 1' | sort -r)
  fi
  if [[ -n $BUILD_TMP && -d $BUILD_TMP ]]; then
    rm -rf --one-file-system "$BUILD_TMP"
  fi
}

build_image() {
  ((EUID == 0)) || die "building the image needs root (debootstrap, chroot)"
  ensure_commands debootstrap:debootstrap mkfs.ext4:e2fsprogs chroot:coreutils
  local mirror
  mirror=$(host_main_mirror)
  [[ -n $mirror ]] || die "no Debian $SUITE mirror found in the host's apt sources"
  rm -f "$STAMP"
  BUILD_TMP=$(mktemp -d "$VPS_CACHE_DIR/build.XXXXXX")
  ROOTFS=$BUILD_TMP/rootfs
  trap cleanup_build EXIT
  : >"$BUILD_LOG"

  local t0 phase
  t0=$(now)
  phase=$t0
  log "debootstrap $SUITE from $mirror (log: $BUILD_LOG)"
  host_proxy_env
  if ! debootstrap --variant=minbase --components=main --include="$GUEST_PACKAGES" \
    "$SUITE" "$ROOTFS" "$mirror" 2>&1 | stamp_lines "$t0" >>"$BUILD_LOG"; then
    tail -n 30 "$BUILD_LOG" >&2
    die "debootstrap failed (log: $BUILD_LOG)"
  fi
  log "debootstrap took $(since "$phase")s"

  phase=$(now)
  log "configuring the guest tree"
  customize_rootfs "$ROOTFS" 2>&1 | stamp_lines "$t0" >>"$BUILD_LOG"

  local pkg
  for pkg in $MUST_BE_ABSENT; do
    # shellcheck disable=SC2016 # a dpkg-query format, not a shell expansion
    if chroot "$ROOTFS" dpkg-query -W -f '${db:Status-Status}' "$pkg" 2>/dev/null | grep -qx installed; then
      die "the base image must be blank, but $pkg is installed"
    fi
  done

  local -a kernels initrds
  kernels=("$ROOTFS"/boot/vmlinuz-*)
  initrds=("$ROOTFS"/boot/initrd.img-*)
  [[ ${#kernels[@]} == 1 && -f ${kernels[0]} ]] || die "expected one kernel in /boot, got: ${kernels[*]}"
  [[ ${#initrds[@]} == 1 && -f ${initrds[0]} ]] || die "expected one initrd in /boot, got: ${initrds[*]}"
  cp "${kernels[0]}" "$BUILD_TMP/vmlinuz"
  cp "${initrds[0]}" "$BUILD_TMP/initrd.img"
  cp "$ROOTFS/etc/ssh/ssh_host_ed25519_key.pub" "$BUILD_TMP/ssh_host_ed25519_key.pub"

  log "configuring took $(since "$phase")s"

  phase=$(now)
  log "making the $VPS_DISK_SIZE ext4 image"
  truncate -s "$VPS_DISK_SIZE" "$BUILD_TMP/base.raw"
  mkfs.ext4 -q -F -L fastapi-edge -d "$ROOTFS" "$BUILD_TMP/base.raw" 2>&1 | stamp_lines "$t0" >>"$BUILD_LOG"
  log "mkfs took $(since "$phase")s"

  # Running guests keep their open backing file; renames swap the new files in atomically.
  mv -f "$BUILD_TMP/vmlinuz" "$KERNEL"
  mv -f "$BUILD_TMP/initrd.img" "$INITRD"
  mv -f "$BUILD_TMP/ssh_host_ed25519_key.pub" "$HOST_KEY_PUB"
  mv -f "$BUILD_TMP/base.raw" "$BASE"
  recipe_hash >"$STAMP"
  cleanup_build
  trap - EXIT
}

# Builds the image when missing or stale. Prints nothing on stdout; sets IMAGE_BUILT/IMAGE_SECONDS.
IMAGE_BUILT=0
IMAGE_SECONDS=0
ensure_image() {
  ensure_commands ssh-keygen:openssh-client
  install -d -m 700 "$CACHE_ROOT" "$VPS_CACHE_DIR"
  SOURCES=$(host_debian_sources)
  exec 8>"$VPS_CACHE_DIR/.lock"
  flock 8
  if [[ ! -s $KEY || ! -s $KEY.pub ]]; then
    rm -f "$KEY" "$KEY.pub"
    ssh-keygen -q -t ed25519 -N '' -C fastapi-edge-e2e -f "$KEY"
  fi
  if image_is_current; then
    exec 8>&-
    return 0
  fi
  local t0
  t0=$(now)
  log "building the base image in $VPS_CACHE_DIR (a few minutes)"
  build_image
  IMAGE_BUILT=1
  IMAGE_SECONDS=$(since "$t0")
  log "image built in ${IMAGE_SECONDS}s"
  exec 8>&-
}

# --- guest -------------------------------------------------------------------------------------

ssh_opts() {
  SSH_OPTS=(-F /dev/null -i "$KEY" -p "$VPS_SSH_PORT" -o IdentitiesOnly=yes -o BatchMode=yes
    -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR
    -o ConnectTimeout=10 -o ServerAliveInterval=15 -o ServerAliveCountMax=4)
}

qemu_pid() {
  local pid
  [[ -s $PIDFILE ]] || return 1
  read -r pid <"$PIDFILE" || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # Guard against a recycled PID.
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'qemu-system' || return 1
  printf '%s\n' "$pid"
}

stop_guest() {
  local pid i
  if pid=$(qemu_pid); then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
    fi
    log "stopped QEMU (pid $pid)"
  fi
  rm -f "$PIDFILE"
  [[ ${VPS_KEEP_DISK:-0} == 1 ]] || rm -f "$OVERLAY"
}

print_env() {
  printf '%s\n' \
    "VPS_HOST=$VPS_HOST" \
    "VPS_SSH_PORT=$VPS_SSH_PORT" \
    "VPS_USER=$VPS_USER" \
    "VPS_HOST_OS=$HOST_OS" \
    "VPS_KEY=$KEY" \
    "VPS_HOST_KEY_FILE=$HOST_KEY_PUB" \
    "VPS_HTTP_PORT=$VPS_HTTP_PORT" \
    "VPS_HTTPS_PORT=$VPS_HTTPS_PORT" \
    "VPS_ACME_HTTP_PORT=$VPS_ACME_HTTP_PORT" \
    "VPS_GUEST_HOST_IP=10.0.2.2" \
    "VPS_CACHE_DIR=$VPS_CACHE_DIR" \
    "VPS_RUN_DIR=$VPS_RUN_DIR"
}

cmd_image() {
  ensure_image
  printf '%s\n' "VPS_IMAGE=$BASE" "VPS_IMAGE_RECIPE=$(cat "$STAMP")" \
    "VPS_IMAGE_BUILT=$IMAGE_BUILT" "VPS_IMAGE_BUILD_SECONDS=$IMAGE_SECONDS"
}

# launch_qemu kvm|tcg HOSTFWD: start QEMU in the background on $OVERLAY, console to $CONSOLE_LOG.
launch_qemu() {
  local accel=$1 hostfwd=$2
  local -a accel_args=(-accel "tcg,thread=multi") private_args=()
  [[ $accel == kvm ]] && accel_args=(-accel kvm -cpu host)
  if [[ -n $VPS_PRIVATE_NET ]]; then
    private_args=(-netdev "socket,id=p0,mcast=$VPS_PRIVATE_NET,localaddr=127.0.0.1" -device "virtio-net-pci,netdev=p0,mac=$(private_mac)")
  fi
  log "accelerator: $accel"
  : >"$CONSOLE_LOG"
  # QEMU must not inherit the locks (fd 8, 9): they would block every later start/stop.
  qemu-system-x86_64 \
    -name fastapi-edge-vps -nodefaults \
    "${accel_args[@]}" -smp "$VPS_CPUS" -m "$VPS_MEMORY" \
    -kernel "$KERNEL" -initrd "$INITRD" -append "$KERNEL_CMDLINE" \
    -drive "file=$OVERLAY,format=qcow2,if=virtio,cache=unsafe" \
    -netdev "user,id=n0,$hostfwd" -device virtio-net-pci,netdev=n0 \
    ${private_args[@]+"${private_args[@]}"} \
    -device virtio-rng-pci \
    -display none -vga none -monitor none -serial "file:$CONSOLE_LOG" \
    -pidfile "$PIDFILE" -daemonize 2>"$QEMU_LOG" 8>&- 9>&- || { cat "$QEMU_LOG" >&2; return 1; }
}

# cmd_start [persistent]: boot a guest; "persistent" reuses a running one or the kept disk.
cmd_start() {
  local persistent=${1:-}
  ensure_commands qemu-system-x86_64:qemu-system-x86 qemu-img:qemu-utils ssh:openssh-client
  ensure_image
  install -d -m 700 "$VPS_RUN_DIR"
  exec 9>"$VPS_RUN_DIR/.lock"
  flock 9
  if [[ -n $persistent ]] && qemu_pid >/dev/null; then
    log "reusing the running guest on port $VPS_SSH_PORT (pid $(qemu_pid))"
    print_env
    printf '%s\n' "VPS_PID=$(qemu_pid)" "VPS_BOOT_SECONDS=0" "VPS_DISK_NEW=0"
    return 0
  fi
  if qemu_pid >/dev/null; then
    log "a guest is already running on port $VPS_SSH_PORT: replacing it with a fresh one"
  fi
  if [[ -n $persistent ]]; then
    VPS_KEEP_DISK=1 stop_guest
    if [[ -s $OVERLAY && $BASE -nt $OVERLAY ]]; then
      log "the base image was rebuilt after this guest's disk was made: starting from a blank disk"
      rm -f "$OVERLAY"
    fi
  else
    stop_guest
  fi

  local hostfwd="hostfwd=tcp:127.0.0.1:$VPS_SSH_PORT-:22"
  hostfwd+=",hostfwd=tcp:127.0.0.1:$VPS_HTTP_PORT-:80"
  hostfwd+=",hostfwd=tcp:127.0.0.1:$VPS_HTTPS_PORT-:443"
  hostfwd+=",hostfwd=tcp:127.0.0.1:$VPS_ACME_HTTP_PORT-:80"
  local rule
  local -a rules
  if [[ -n $VPS_EXTRA_HOSTFWD ]]; then
    IFS=, read -r -a rules <<<"$VPS_EXTRA_HOSTFWD"
    for rule in "${rules[@]}"; do hostfwd+=",hostfwd=$rule"; done
  fi

  local disk_new=0
  if [[ -s $OVERLAY ]]; then
    log "booting the kept disk $OVERLAY"
  else
    qemu-img create -q -f qcow2 -F raw -b "$BASE" "$OVERLAY"
    disk_new=1
  fi
  # KVM when it can boot this guest (a workstation, a VPS with nested virtualisation), else
  # software emulation (TCG). An openable /dev/kvm is not enough: on some CI machines KVM
  # runs code but never boots a kernel. So a KVM boot must print on the console within
  # VPS_KVM_PROBE seconds, or the guest is restarted under TCG; the verdict is cached.
  local accel=tcg t0
  if [[ ${VPS_ACCEL:-auto} == kvm || (${VPS_ACCEL:-auto} == auto && -r /dev/kvm && -w /dev/kvm && ! -e $CACHE_ROOT/kvm-unusable) ]]; then
    accel=kvm
  fi
  t0=$(now)
  launch_qemu "$accel" "$hostfwd" || { [[ -n $persistent ]] || rm -f "$OVERLAY"; die "QEMU did not start (a forwarded port already in use? see $QEMU_LOG)"; }
  if [[ $accel == kvm ]]; then
    local i
    for ((i = 0; i < ${VPS_KVM_PROBE:-20}; i++)); do
      [[ -s $CONSOLE_LOG ]] && break
      sleep 1
    done
    if [[ ! -s $CONSOLE_LOG ]]; then
      log "KVM did not boot the guest within ${VPS_KVM_PROBE:-20}s: using TCG (remembered in $CACHE_ROOT/kvm-unusable)"
      touch "$CACHE_ROOT/kvm-unusable"
      VPS_KEEP_DISK=1 stop_guest
      t0=$(now)
      launch_qemu tcg "$hostfwd" || { [[ -n $persistent ]] || rm -f "$OVERLAY"; die "QEMU did not start (see $QEMU_LOG)"; }
    fi
  fi
  log "QEMU pid $(cat "$PIDFILE"), waiting for SSH on $VPS_HOST:$VPS_SSH_PORT (console: $CONSOLE_LOG)"

  ssh_opts
  local deadline
  deadline=$(awk -v a="$t0" -v t="$VPS_BOOT_TIMEOUT" 'BEGIN { printf "%d", a + t }')
  until timeout 20 ssh "${SSH_OPTS[@]}" "$VPS_USER@$VPS_HOST" true </dev/null 2>/dev/null; do
    if ! qemu_pid >/dev/null; then
      tail -n 40 "$CONSOLE_LOG" >&2 || true
      die "QEMU exited during boot (console: $CONSOLE_LOG)"
    fi
    if (($(date +%s) >= deadline)); then
      tail -n 40 "$CONSOLE_LOG" >&2 || true
      stop_guest
      die "no SSH after ${VPS_BOOT_TIMEOUT}s (console: $CONSOLE_LOG)"
    fi
    sleep 2
  done
  local boot
  boot=$(since "$t0")
  log "SSH answered ${boot}s after QEMU started"
  if [[ -n $VPS_PRIVATE_ADDRESS ]]; then
    configure_private_nic || { stop_guest; die "could not set $VPS_PRIVATE_ADDRESS on eth1"; }
    log "eth1: $VPS_PRIVATE_ADDRESS on $VPS_PRIVATE_NET (MAC $(private_mac))"
  fi
  print_env
  printf '%s\n' "VPS_PID=$(cat "$PIDFILE")" "VPS_BOOT_SECONDS=$boot" "VPS_DISK_NEW=$disk_new"
}

cmd_stop() {
  if [[ -d $VPS_RUN_DIR ]]; then
    exec 9>"$VPS_RUN_DIR/.lock"
    flock 9
  fi
  stop_guest
}

cmd_ssh() {
  [[ ${1:-} == -- ]] && shift
  qemu_pid >/dev/null || die "no guest running on port $VPS_SSH_PORT (run: vps.sh start)"
  ssh_opts
  if (($# == 0)); then
    exec ssh "${SSH_OPTS[@]}" -t "$VPS_USER@$VPS_HOST"
  fi
  exec ssh "${SSH_OPTS[@]}" "$VPS_USER@$VPS_HOST" -- "$@"
}

cmd_status() {
  local pid
  if pid=$(qemu_pid); then
    printf '%s\n' VPS_STATE=running "VPS_PID=$pid"
  else
    printf '%s\n' VPS_STATE=stopped
    return 1
  fi
}

cmd_clean() {
  cmd_stop
  rm -rf --one-file-system "$VPS_RUN_DIR" "$VPS_CACHE_DIR"
  log "removed $VPS_RUN_DIR and $VPS_CACHE_DIR"
}

usage() {
  sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0" >&2
  exit 2
}

main() {
  local cmd=${1:-}
  (($#)) && shift
  check_settings
  case $cmd in
    image) cmd_image ;;
    start) cmd_start ;;
    up) cmd_start persistent ;;
    stop) cmd_stop ;;
    ssh) cmd_ssh "$@" ;;
    env) print_env ;;
    status) cmd_status ;;
    clean) cmd_clean ;;
    -h | --help | help | '') usage ;;
    *) die "unknown command '$cmd' (image|start|up|stop|ssh|env|status|clean)" ;;
  esac
}

main "$@"
