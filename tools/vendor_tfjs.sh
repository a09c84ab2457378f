#!/usr/bin/env bash
# Re-creates real_esrgan_tf/export/web_assets/vendor/ (the TF.js files `export --format web` copies
# into the page) from the npm registry: `npm pack` of pinned versions, checked against their
# registry integrity, then only the dist files the page loads. Needs npm; run from anywhere.
set -euo pipefail
VERSION=4.22.0
declare -A INTEGRITY=(
  [@tensorflow/tfjs]=sha512-0TrIrXs6/b7FLhLVNmfh8Sah6JgjBPH4mZ8JGb7NU6WW+cx00qK5BcAZxw7NCzxj6N8MRAIfHq+oNbPUNG5VAg==
  [@tensorflow/tfjs-backend-wasm]=sha512-/IYhReRIp4jg/wYW0OwbbJZG8ON87mbz0PgkiP3CdcACRSvUN0h8rvC0O3YcDtkTQtFWF/tcXq/KlVDyV49wmA==
  [@tensorflow/tfjs-backend-webgpu]=sha512-lvIc7Af4Tl2BCdYp43iQmSCRq3asaKT0q2xaErphXiUZ+jqeB0bQa0ZvQys1Xatvto0U4/c90DVsHPfvkn5ftg==
)
# package -> the dist files the page loads (es2017 bundles: every browser with WebGL 2 runs them;
# the wasm backend's threaded build is left out: it needs cross-origin isolation headers that a
# plain static server such as `python -m http.server` does not send).
declare -A FILES=(
  [@tensorflow/tfjs]="tf.es2017.min.js"
  [@tensorflow/tfjs-backend-wasm]="tf-backend-wasm.es2017.min.js tfjs-backend-wasm.wasm tfjs-backend-wasm-simd.wasm"
  [@tensorflow/tfjs-backend-webgpu]="tf-backend-webgpu.es2017.min.js"
)
OUT="$(cd "$(dirname "$0")/.." && pwd)/real_esrgan_tf/export/web_assets/vendor"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/new"
for package in "${!FILES[@]}"; do
  tarball="$WORK/$(cd "$WORK" && npm pack --silent "$package@$VERSION")"
  actual="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
  if [[ "$actual" != "${INTEGRITY[$package]}" ]]; then
    echo "vendor_tfjs.sh: $package@$VERSION integrity $actual != pinned ${INTEGRITY[$package]}" >&2
    exit 1
  fi
  mkdir -p "$WORK/x" && rm -rf "$WORK/x/package" && tar xzf "$tarball" -C "$WORK/x"
  for f in ${FILES[$package]}; do cp "$WORK/x/package/dist/$f" "$WORK/new/$f"; done
  grep -q '"license": "Apache-2.0"' "$WORK/x/package/package.json"
done
cp /usr/share/common-licenses/Apache-2.0 "$WORK/new/LICENSE-Apache-2.0" 2>/dev/null \
  || cp "$OUT/LICENSE-Apache-2.0" "$WORK/new/"  # (Debian's base-files ships the text)
{
  echo "TensorFlow.js $VERSION (Apache-2.0, Copyright Google LLC; licence text in LICENSE-Apache-2.0),"
  echo "unmodified dist files from the npm packages below, re-created by tools/vendor_tfjs.sh."
  for package in "${!FILES[@]}"; do echo "$package@$VERSION ${INTEGRITY[$package]}: ${FILES[$package]}"; done | sort
} > "$WORK/new/README.txt"
mkdir -p "$(dirname "$OUT")" && rm -rf "$OUT.tmp" && cp -r "$WORK/new" "$OUT.tmp" && rm -rf "$OUT" && mv "$OUT.tmp" "$OUT"
ls -l "$OUT"
