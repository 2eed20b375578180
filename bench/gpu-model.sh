#!/usr/bin/env bash
# Model runner decode throughput on a real GPU: stories260K, batch 1 and batch 8, f32 against f16 weights, as
# JSON on stdout (progress on stderr). The `per item` / items fields give time per token; tokens/s = 1000 / that.
# Needs stories260K.bin in $KVCOMPACT_MODEL_DIR or ../shared/models. Not run on the development machines
# (SwiftShader only there).
#
#   KVCOMPACT_MODEL_DIR=~/models bash bench/gpu-model.sh > gpu-model.json
set -euo pipefail
cd "$(dirname "$0")/.."
# A real GPU's Vulkan driver, never SwiftShader: VK_ICD_FILENAMES would pin the software one.
unset VK_ICD_FILENAMES
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
[ -d node_modules ] || npm ci --no-audit --no-fund >&2
node esbuild.config.mjs >&2
node dist/cli.js bench --json --adapter hardware --only copy,model
