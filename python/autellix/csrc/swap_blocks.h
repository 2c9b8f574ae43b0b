// Shared by the CPU (swap_blocks.cpp) and CUDA (swap_blocks_cuda.cu) kernels of
// torch.ops.autellix.swap_blocks / swap_blocks_multi: argument checks and the byte-level
// copy plan. Every check runs before the first write, so a rejected call leaves dst untouched
// and no call can write outside dst's blocks, whatever the Python layer let through.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <string>
#include <vector>

namespace autellix {

// One layer's copy parameters, in bytes. Pages are byte ranges: block b of a layer starts at
// base + b * stride and spans page_bytes. Plain old data so the CUDA path can upload an array
// of them as is.
struct LayerPlan {
  const char* src;
  char* dst;
  int64_t src_stride;
  int64_t dst_stride;
  int64_t page_bytes;
};

struct SwapPlan {
  std::vector<LayerPlan> layers;
  at::Tensor mapping;  // contiguous int64 CPU [n, 2]: (src_block, dst_block)
  int64_t n = 0;
};

// The copy methods of the CUDA path; the CPU path accepts the same names and ignores them so
// callers need not know which kernel the dispatcher picks.
enum class Method { kAuto, kKernel, kMemcpyBatch };

inline Method parse_method(const std::string& method) {
  if (method == "auto") return Method::kAuto;
  if (method == "kernel") return Method::kKernel;
  if (method == "memcpy_batch") return Method::kMemcpyBatch;
  TORCH_CHECK_VALUE(false, "autellix::swap_blocks: method must be 'auto', 'kernel' or 'memcpy_batch', got '",
                    method, "'");
}

// A block's page must be one dense byte range (any dim order: vLLM's NHD and HND views both
// qualify), and pages must not overlap, so that a page copy is one memcpy.
inline void check_paged(const at::Tensor& t, const char* what, size_t layer) {
  TORCH_CHECK_VALUE(t.dim() >= 1, "autellix::swap_blocks: ", what, "[", layer,
                    "] needs a block axis at dim 0, got a 0-dim tensor");
  if (t.size(0) == 0) return;
  TORCH_CHECK_VALUE(t.select(0, 0).is_non_overlapping_and_dense(), "autellix::swap_blocks: ", what, "[",
                    layer, "]: each block (dim 0 slice) must be one dense memory range, got sizes ",
                    t.sizes(), " strides ", t.strides());
  TORCH_CHECK_VALUE(t.size(0) == 1 || t.stride(0) >= t.select(0, 0).numel(), "autellix::swap_blocks: ", what,
                    "[", layer, "]: blocks overlap (stride(0) = ", t.stride(0), " < elements per block ",
                    t.select(0, 0).numel(), ")");
}

// Same element order inside a page, so copying bytes copies elements to the same positions.
inline bool same_page_layout(const at::Tensor& a, const at::Tensor& b) {
  for (int64_t d = 1; d < a.dim(); ++d) {
    if (a.size(d) > 1 && a.stride(d) != b.stride(d)) return false;
  }
  return true;
}

inline SwapPlan make_plan(at::TensorList src, at::TensorList dst, const at::Tensor& block_mapping) {
  TORCH_CHECK_VALUE(src.size() == dst.size(), "autellix::swap_blocks: ", src.size(), " src layers but ",
                    dst.size(), " dst layers");
  TORCH_CHECK_TYPE(block_mapping.scalar_type() == at::kLong,
                   "autellix::swap_blocks: block_mapping must be int64, got ", block_mapping.scalar_type());
  TORCH_CHECK_VALUE(block_mapping.device().is_cpu(),
                    "autellix::swap_blocks: block_mapping must be a CPU tensor, got one on ",
                    block_mapping.device());
  TORCH_CHECK_VALUE(block_mapping.dim() == 2 && block_mapping.size(1) == 2,
                    "autellix::swap_blocks: block_mapping must have shape [n, 2], got ",
                    block_mapping.sizes());

  SwapPlan plan;
  plan.mapping = block_mapping.contiguous();
  plan.n = plan.mapping.size(0);
  plan.layers.reserve(src.size());

  int64_t src_blocks = -1;
  int64_t dst_blocks = -1;
  for (size_t i = 0; i < src.size(); ++i) {
    const at::Tensor& s = src[i];
    const at::Tensor& d = dst[i];
    TORCH_CHECK_TYPE(s.scalar_type() == d.scalar_type(), "autellix::swap_blocks: layer ", i, ": src dtype ",
                     s.scalar_type(), " != dst dtype ", d.scalar_type());
    check_paged(s, "src", i);
    check_paged(d, "dst", i);
    TORCH_CHECK_VALUE(s.dim() == d.dim() && s.sizes().slice(1) == d.sizes().slice(1),
                      "autellix::swap_blocks: layer ", i, ": src ", s.sizes(), " and dst ", d.sizes(),
                      " differ after the block axis");
    TORCH_CHECK_VALUE(same_page_layout(s, d), "autellix::swap_blocks: layer ", i,
                      ": src and dst order a block's elements differently (strides ", s.strides(), " vs ",
                      d.strides(), ")");
    // One block count per side keeps a single index check valid for every layer.
    TORCH_CHECK_VALUE(i == 0 || (s.size(0) == src_blocks && d.size(0) == dst_blocks),
                      "autellix::swap_blocks: layer ", i, " has ", s.size(0), " src / ", d.size(0),
                      " dst blocks, layer 0 has ", src_blocks, " / ", dst_blocks);
    src_blocks = s.size(0);
    dst_blocks = d.size(0);
    const int64_t elem = static_cast<int64_t>(s.element_size());
    plan.layers.push_back(LayerPlan{static_cast<const char*>(s.data_ptr()), static_cast<char*>(d.data_ptr()),
                                    s.stride(0) * elem, d.stride(0) * elem,
                                    (s.dim() > 1 ? s.select(0, 0).numel() : 1) * elem});
  }

  // Index checks: every index in range, no destination written twice (a duplicate would make
  // the result depend on the order the copies happen to run in).
  const int64_t* m = plan.mapping.data_ptr<int64_t>();
  std::vector<char> seen(plan.n > 0 && !plan.layers.empty() ? static_cast<size_t>(dst_blocks) : 0, 0);
  for (int64_t k = 0; k < plan.n && !plan.layers.empty(); ++k) {
    const int64_t sb = m[2 * k];
    const int64_t db = m[2 * k + 1];
    TORCH_CHECK_INDEX(sb >= 0 && sb < src_blocks, "autellix::swap_blocks: block_mapping[", k,
                      "]: src block ", sb, " out of range [0, ", src_blocks, ")");
    TORCH_CHECK_INDEX(db >= 0 && db < dst_blocks, "autellix::swap_blocks: block_mapping[", k,
                      "]: dst block ", db, " out of range [0, ", dst_blocks, ")");
    TORCH_CHECK_VALUE(!seen[db], "autellix::swap_blocks: block_mapping[", k, "]: dst block ", db,
                      " appears twice");
    seen[db] = 1;
  }
  return plan;
}

}  // namespace autellix
