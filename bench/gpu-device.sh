#!/usr/bin/env bash
# Decode attention on a real GPU: the copy yardstick, the old paged-attention rows (1K/4K/16K) and the
# split-context (flash-decode) rows at 16K and 64K, f16 / int4 / int2, as JSON on stdout (progress on stderr).
# Goals from issue 16: flash-decode f16 ≥ 0.7× copy at 16K and more; int4 ≥ 2× faster than f16 at 16K (the
# `speedup` field of the int4 rows). Not run on the development machines (SwiftShader only there).
#
#   bash bench/gpu-device.sh > gpu-bench.json
#   KVCOMPACT_BENCH_CONTEXTS=16384,65536,131072 bash bench/gpu-device.sh   # other contexts
set -euo pipefail
cd "$(dirname "$0")/.."
# A real GPU's Vulkan driver, never SwiftShader: VK_ICD_FILENAMES would pin the software one.
unset VK_ICD_FILENAMES
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
export KVCOMPACT_BENCH_CONTEXTS="${KVCOMPACT_BENCH_CONTEXTS:-16384,65536}"
[ -d node_modules ] || npm ci --no-audit --no-fund >&2
node esbuild.config.mjs >&2
node dist/cli.js bench --json --adapter hardware --only copy,paged-attention-decode,flash-decode
