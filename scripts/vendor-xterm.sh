#!/usr/bin/env bash
# Refreshes the xterm.js that the web UI's console uses (crates/corral-api/ui/vendor/xterm/) from
# the npm package @xterm/xterm at the version pinned here. The tarball must have the pinned
# sha512 integrity, which must also be the one the registry reports for that version. Only the
# browser bundle (the ES module), its stylesheet and its licence are copied; everything npm
# touches stays in a temporary directory.
#
# To move to another version: set `version`, run this script with `integrity` left as it is, and
# put the integrity it reports as the registry's into `integrity`.
set -euo pipefail

package=@xterm/xterm
version=6.0.0
integrity=sha512-TQwDdQGtwwDt+2cgKDLn0IRaSxYu1tSUjgKarSDkUM0ZNiSRXFpjxEsvc/Zgc5kq5omJ+V0a8/kIM2WD3sMOYg==

repo="$(cd "$(dirname "$0")/.." && pwd)"
dest="$repo/crates/corral-api/ui/vendor/xterm"

for tool in npm node tar; do
  command -v "$tool" >/dev/null || {
    echo "vendor-xterm: needs $tool (Debian: apt-get install npm)" >&2
    exit 1
  }
done

work="$(mktemp -d -t corral-xterm.XXXXXX)"
trap 'rm -rf "$work"' EXIT
# npm's cache, too, stays out of the user's home.
export npm_config_cache="$work/npm-cache"

reported="$(npm view "$package@$version" dist.integrity)"
if [ "$reported" != "$integrity" ]; then
  echo "vendor-xterm: the registry reports $reported for $package@$version, not the pinned $integrity" >&2
  exit 1
fi

(cd "$work" && npm pack --silent "$package@$version" >/dev/null)
tarball="$work/xterm-xterm-$version.tgz"
actual="sha512-$(node -e '
  const data = require("fs").readFileSync(process.argv[1]);
  process.stdout.write(require("crypto").createHash("sha512").update(data).digest("base64"));
' "$tarball")"
if [ "$actual" != "$integrity" ]; then
  echo "vendor-xterm: the tarball's integrity is $actual, not the pinned $integrity" >&2
  exit 1
fi

tar -xzf "$tarball" -C "$work" package/lib/xterm.mjs package/css/xterm.css package/LICENSE
mkdir -p "$dest"
install -m 0644 "$work/package/lib/xterm.mjs" "$dest/xterm.mjs"
install -m 0644 "$work/package/css/xterm.css" "$dest/xterm.css"
install -m 0644 "$work/package/LICENSE" "$dest/LICENSE"
cat >"$dest/README.md" <<EOF
# xterm.js, vendored

The web UI's console (\`crates/corral-api/ui/console.js\`) is [xterm.js](https://xtermjs.org),
from the npm package \`$package\` version $version (MIT, \`LICENSE\`), tarball integrity
\`$integrity\`.

Copied unchanged from the package: \`lib/xterm.mjs\` (its browser bundle as an ES module) as
\`xterm.mjs\`, \`css/xterm.css\` and \`LICENSE\`. Nothing else of the package or of npm is in the
repository.

Written by \`scripts/vendor-xterm.sh\`, which pins the version and checks the tarball's sha512
integrity; change the version there and run it to refresh these files.
EOF
echo "vendored $package@$version ($integrity) into ${dest#"$repo"/}"
