#!/bin/sh
# Regenerates the dpkg logs in this folder by running the real dpkg against
# throw-away sandboxes (--root, --log), so the transaction tests read what dpkg
# itself writes. Needs dpkg and dpkg-deb; does not touch the host's database.
#
#   sh make-dpkg-logs.sh            # writes *.log next to this script
set -eu

out=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# build NAME VERSION [MAINTSCRIPT BODY]: a tiny arch-all package owning one file,
# /usr/share/$FILE_OWNER/version (FILE_OWNER defaults to NAME), with $EXTRA in its control.
build() {
    dir="$work/build/$1-$2"
    owner=${FILE_OWNER:-$1}
    mkdir -p "$dir/DEBIAN" "$dir/usr/share/$owner"
    echo "$1 $2" >"$dir/usr/share/$owner/version"
    cat >"$dir/DEBIAN/control" <<CONTROL
Package: $1
Version: $2
Architecture: all
Maintainer: Fenrir tests <tests@fenrir.invalid>
Description: package for Fenrir's parser tests
${EXTRA:-}
CONTROL
    sed -i '/^$/d' "$dir/DEBIAN/control"
    if [ -n "${CONFFILE:-}" ]; then
        mkdir -p "$dir/etc"
        echo "setting=$2" >"$dir/etc/$CONFFILE"
        echo "/etc/$CONFFILE" >"$dir/DEBIAN/conffiles"
    fi
    if [ $# -ge 4 ]; then
        printf '#!/bin/sh\n%s\n' "$4" >"$dir/DEBIAN/$3"
        chmod 755 "$dir/DEBIAN/$3"
    fi
    dpkg-deb --root-owner-group --build "$dir" "$work/$1_$2.deb" >/dev/null
}

# sandbox NAME: a fresh, empty dpkg database; sets $root and $log.
sandbox() {
    root="$work/root-$1"
    log="$out/$1.log"
    rm -f "$log"
    mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" \
        "$root/var/lib/dpkg/triggers"
    : >"$root/var/lib/dpkg/status"
}

# run ARGS...: one dpkg run in the sandbox; a failing run is expected in some scenarios.
run() {
    dpkg --root="$root" --log="$log" --force-script-chrootless --force-not-root \
        --force-unsafe-io "$@" >/dev/null 2>&1 || true
}

CONFFILE='fenrir ok.conf' build fenrir-ok 1.0
CONFFILE='fenrir ok.conf' build fenrir-ok 2.0
CONFFILE='fenrir ok.conf' build fenrir-ok 1:0.5
build fenrir-bad 1.0 postinst 'exit 1'
build fenrir-badpre 1.0 preinst 'exit 1'
build fenrir-ok 3.0 preinst 'exit 1'
build fenrir-lone 1.0
FILE_OWNER=fenrir-lone EXTRA='Replaces: fenrir-lone' build fenrir-heir 1.0

# Install, upgrade, reinstall, downgrade, epoch upgrade, remove, purge.
sandbox lifecycle
run -i "$work/fenrir-ok_1.0.deb"
run -i "$work/fenrir-ok_2.0.deb"
run -i "$work/fenrir-ok_2.0.deb"
run -i "$work/fenrir-ok_1.0.deb"
echo "edited=1" >>"$root/etc/fenrir ok.conf"
run --force-confnew -i "$work/fenrir-ok_1:0.5.deb"
run -r fenrir-ok
run -i "$work/fenrir-ok_1.0.deb"
run -P fenrir-ok

# A postinst that fails leaves the package half-configured.
sandbox failing-postinst
run -i "$work/fenrir-bad_1.0.deb"
run -i "$work/fenrir-ok_1.0.deb"

# A preinst that fails makes dpkg roll a new install back.
sandbox failing-preinst
run -i "$work/fenrir-badpre_1.0.deb"

# A preinst that fails makes dpkg roll an upgrade back to the old version.
sandbox failing-upgrade
run -i "$work/fenrir-ok_1.0.deb"
run -i "$work/fenrir-ok_3.0.deb"

# Purging what a removal left, and a package whose only file another one takes over.
sandbox purge-and-disappear
run -i "$work/fenrir-ok_1.0.deb"
run -r fenrir-ok
run -P fenrir-ok
run -i "$work/fenrir-lone_1.0.deb"
run -i "$work/fenrir-heir_1.0.deb"

# apt's way: unpack in one run, configure in the next.
sandbox unpack-then-configure
run --unpack "$work/fenrir-ok_1.0.deb"
run --configure fenrir-ok
run --unpack "$work/fenrir-ok_2.0.deb"
run --configure -a
