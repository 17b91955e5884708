#!/usr/bin/env bash
# build-wheels.sh OUTDIR: the wheelhouse the tests deploy apps from (appWheelhouse).
#
# PyPI is unreachable from these machines, so the wheels are built here:
#   - edge-probe 1.0.0 from test/fixtures/edge-probe (a package no distribution ships);
#   - uvicorn 0.53.0, click 8.3.3 and h11 0.16.0 from the files of Debian unstable's
#     python3-uvicorn, python3-click and python3-h11 (pure Python; apt verifies the
#     packages), each repackaged as a setuptools project with the name, version,
#     Python requirement and dependencies of its own metadata, and built by pip.
#     uvicorn >= 0.33 is the one that accepts a CIDR in --forwarded-allow-ips
#     (ALB mode); Debian 13 ships 0.32.
# Everything runs in a cached Debian unstable chroot (scripts/get-chroot.sh). The
# result is cached: a complete OUTDIR (marker file) is left as it is.
# Prints OUTDIR as the last line of stdout.
set -euo pipefail

(($# == 1)) || { echo "usage: build-wheels.sh OUTDIR" >&2; exit 64; }
out=$(realpath -m -- "$1")
marker=.fastapi-edge-wheels-v1
if [[ -f $out/$marker ]]; then
  echo "$out"
  exit 0
fi
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd -- "$here/../.." && pwd)
root=$(bash "$repo/scripts/get-chroot.sh" wheels-sid sid python3-pip python3-setuptools python3-wheel ca-certificates | tail -n 1)
[[ -d $root ]] || { echo "build-wheels.sh: no chroot" >&2; exit 1; }

rel=/tmp/fastapi-edge-wheels.$$
work=$root$rel
rm -rf -- "$work"
mkdir -p -- "$work/debs" "$work/src" "$work/wheels"
trap 'rm -rf -- "$work"' EXIT
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 HOME=/root "$@"; }

in_root sh -c "apt-get update -q=2 && cd $rel/debs && apt-get download -q=2 -o APT::Sandbox::User=root python3-uvicorn python3-click python3-h11" >&2
for deb in "$work"/debs/*.deb; do dpkg-deb -x "$deb" "$work/debs/root"; done
cp -a -- "$repo/test/fixtures/edge-probe" "$work/src/edge-probe"

# One setuptools project per distribution, from its own metadata.
in_root python3 - "$rel/debs/root/usr/lib/python3/dist-packages" "$rel/src" <<'PY' >&2
import email.parser, pathlib, shutil, sys
site, src = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
for pkg in ("uvicorn", "click", "h11"):
    info = next(p for p in site.iterdir() if p.name.startswith(pkg + "-") and p.suffix in (".dist-info", ".egg-info"))
    meta = info / ("METADATA" if info.suffix == ".dist-info" else "PKG-INFO")
    m = email.parser.Parser().parsestr(meta.read_text())
    deps = [d for d in (m.get_all("Requires-Dist") or []) if "extra ==" not in d]
    proj = src / pkg
    shutil.copytree(site / pkg, proj / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    q = lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
    (proj / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n\n'
        f'[project]\nname = {q(m["Name"])}\nversion = {q(m["Version"])}\n'
        + (f'requires-python = {q(m["Requires-Python"])}\n' if m["Requires-Python"] else "")
        + f'dependencies = [{", ".join(q(d) for d in deps)}]\n\n'
        f'[tool.setuptools.packages.find]\ninclude = [{q(pkg)}, {q(pkg + ".*")}]\n\n'
        '[tool.setuptools.package-data]\n"*" = ["py.typed"]\n'
    )
    print(f"build-wheels: {m['Name']} {m['Version']} depends on {deps}")
PY
for proj in "$work"/src/*/; do
  in_root python3 -m pip wheel -q --no-deps --no-build-isolation --no-index -w "$rel/wheels" "$rel/src/$(basename "$proj")" >&2
done

rm -rf -- "$out.tmp"
mkdir -p -- "$out.tmp"
cp -- "$work"/wheels/*.whl "$out.tmp/"
touch -- "$out.tmp/$marker"
rm -rf -- "$out"
mv -T -- "$out.tmp" "$out"
ls -- "$out" >&2
echo "$out"
