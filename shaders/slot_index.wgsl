// MergeMode 'slots' on the GPU (src/compress/gpu-slots.ts; reference src/kernels/compress/slot-index.ts
// slotIndexReference): after merge_slots absorbed a head's evicted tokens, the head's new logical j holds slot j
// for j < count_after, else the kept real token kept_index[count + j − count_after] (its old slots are the first
// `count` kept indices). Writes the two lists the compaction submit reads instead of kept_index:
//   compact_index[j]: SLOT_SOURCE_FLAG | (state head × SLOTS + j) for a slot (shaders/compact_blocks.wgsl reads
//                     it from the slot state), else the kept token's old logical index;
//   gather_index[j]:  the old logical index whose statistics move to j: j itself for a slot (an old slot keeps
//                     its own; a new one is cleared to 0 afterwards), else the kept token's;
// and the row's new count into kept_counts (gather_stats moves that many). One workgroup per head.

@group(0) @binding(0) var<uniform> params: SlotIndexParams;
@group(0) @binding(1) var<storage, read> heads: array<u32>;              // [num_heads][4]: row, count, count_after, kept
@group(0) @binding(2) var<storage, read> kept_index: array<u32>;         // [row][stride]
@group(0) @binding(3) var<storage, read_write> kept_counts: array<u32>;  // [row]
@group(0) @binding(4) var<storage, read_write> compact_index: array<u32>; // [row][stride]
@group(0) @binding(5) var<storage, read_write> gather_index: array<u32>;  // [row][stride]

const SLOT_SOURCE_FLAG: u32 = 0x80000000u;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let head = linear_workgroup_index(wid, nwg);
  if (head >= params.num_heads) {
    return;
  }
  let row = heads[4u * head];
  let count = heads[4u * head + 1u];
  let after = heads[4u * head + 2u];
  let kept = heads[4u * head + 3u];
  let total = after + kept - count;
  let base = row * params.stride;
  for (var j = lid; j < total; j += WORKGROUP_SIZE) {
    if (j < after) {
      compact_index[base + j] = SLOT_SOURCE_FLAG | (head * params.slots + j);
      gather_index[base + j] = j;
    } else {
      let old = kept_index[base + count + j - after];
      compact_index[base + j] = old;
      gather_index[base + j] = old;
    }
  }
  if (lid == 0u) {
    kept_counts[row] = total;
  }
}
