#!/usr/bin/env bash
# Builds the in-browser detector into a servable folder, web/dist/:
#   1. the library for wasm32-unknown-unknown (release, WebAssembly SIMD on),
#   2. wasm-bindgen --target web (the CLI pinned to Cargo.lock's wasm-bindgen,
#      installed with cargo if missing or another version),
#   3. wasm-opt -O3 when binaryen 116+ is installed (optional),
#   4. the page, the bundled model and the sample images.
# Then serve it:   python3 -m http.server -d web/dist 8080
#
# Environment: CARGO_TARGET_DIR as usual (default target/); SCOREDD_NO_WASM_OPT=1
# skips wasm-opt.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
web="$root/web"
dist="$web/dist"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
triple=wasm32-unknown-unknown

say() { printf 'build.sh: %s\n' "$*" >&2; }

# --- toolchain --------------------------------------------------------------
if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx "$triple"; then
  say "adding the $triple target"
  rustup target add "$triple"
fi

# The wasm-bindgen CLI must be exactly the version of the wasm-bindgen crate
# in Cargo.lock: the two halves of the bindings are generated together.
want=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
if [ -z "$want" ]; then
  say "no wasm-bindgen in Cargo.lock; run 'cargo generate-lockfile' or 'cargo build' first"
  exit 1
fi
have=$(wasm-bindgen --version 2>/dev/null | awk '{ print $2 }' || true)
if [ "$have" != "$want" ]; then
  say "installing wasm-bindgen-cli $want (found '${have:-none}'); takes a few minutes"
  # --locked first (the CLI's own tested dependency versions); a registry
  # mirror lacking one of them falls back to a fresh resolution.
  cargo install --locked wasm-bindgen-cli --version "=$want" ||
    cargo install wasm-bindgen-cli --version "=$want"
fi

# --- wasm -------------------------------------------------------------------
say "compiling the library for $triple (release)"
# cdylib only here, so native builds stay rlib-only. simd128 turns on
# matrixmultiply's WebAssembly SIMD GEMM (every current browser has it).
# No debug info: wasm-bindgen strips names anyway, and it halves the link time.
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+simd128" CARGO_PROFILE_RELEASE_DEBUG=0 \
  cargo rustc --lib --release --target "$triple" --crate-type cdylib
wasm="$target_dir/$triple/release/scoredd.wasm"
[ -f "$wasm" ] || { say "expected $wasm after the build"; exit 1; }

rm -rf "$dist.tmp"
mkdir -p "$dist.tmp/pkg"
wasm-bindgen --target web --no-typescript --remove-name-section --remove-producers-section \
  --out-dir "$dist.tmp/pkg" "$wasm"
raw_size=$(stat -c %s "$dist.tmp/pkg/scoredd_bg.wasm")
# binaryen before 116 (Debian bookworm has 108) mistypes wasm-bindgen's externref
# table: the module then fails to instantiate ("WebAssembly.Table.set(): Argument 1
# is invalid"). Older ones are skipped unless SCOREDD_WASM_OPT=force.
opt_version=$(wasm-opt --version 2>/dev/null | awk '{ print $3 }' || true)
if [ "${SCOREDD_NO_WASM_OPT:-0}" = 1 ] || [ -z "$opt_version" ]; then
  say "wasm-opt not found (binaryen 116+) or disabled: keeping wasm-bindgen's output"
elif [ "${opt_version%%[^0-9]*}" -lt 116 ] && [ "${SCOREDD_WASM_OPT:-}" != force ]; then
  say "wasm-opt $opt_version is older than 116 and breaks externref tables: skipped"
else
  say "wasm-opt -O3 (binaryen $opt_version)"
  wasm-opt -O3 --enable-simd --enable-bulk-memory --enable-nontrapping-float-to-int \
    --enable-sign-ext --enable-mutable-globals --enable-reference-types --enable-multivalue \
    "$dist.tmp/pkg/scoredd_bg.wasm" -o "$dist.tmp/pkg/scoredd_bg.opt.wasm"
  mv "$dist.tmp/pkg/scoredd_bg.opt.wasm" "$dist.tmp/pkg/scoredd_bg.wasm"
fi
opt_size=$(stat -c %s "$dist.tmp/pkg/scoredd_bg.wasm")

# --- the page -----------------------------------------------------------------
cp "$web/index.html" "$web/app.js" "$web/pool.js" "$web/worker.js" "$web/style.css" "$dist.tmp/"
cp -r "$web/models" "$web/samples" "$dist.tmp/"
printf '{"wasm_bytes_raw": %s, "wasm_bytes": %s, "wasm_bindgen": "%s"}\n' \
  "$raw_size" "$opt_size" "$want" >"$dist.tmp/build.json"
rm -rf "$dist"
mv "$dist.tmp" "$dist"
say "wasm: $raw_size bytes raw, $opt_size bytes served"
say "done: serve with  python3 -m http.server -d web/dist 8080  and open http://localhost:8080"
