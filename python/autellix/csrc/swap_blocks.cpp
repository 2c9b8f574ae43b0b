// torch.ops.autellix.swap_blocks / swap_blocks_multi: schemas and the CPU kernel.
//
// Built just-in-time by python/autellix/kvswap/_build.py, alone (CPU build) or together with
// swap_blocks_cuda.cu (CUDA build); call it through autellix.kvswap.ops, which validates with
// typed Python errors first. The checks in swap_blocks.h run here again so the op is memory-safe
// when called directly.
//
// Shipping: every file of csrc/ has a file symlink in python/autellix/csrc/; maturin copies the
// targets of file symlinks (not of a symlinked directory) into the wheel and the sdist, so the
// installed package carries the sources. A new file here needs its symlink there
// (tests/kvswap/test_build.py checks).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstring>

#include "swap_blocks.h"

namespace autellix {
namespace {

void swap_blocks_multi_cpu(at::TensorList src, at::TensorList dst, const at::Tensor& block_mapping,
                           c10::string_view method) {
  parse_method(std::string(method));  // validated for symmetry with CUDA; one CPU method only
  const SwapPlan plan = make_plan(src, dst, block_mapping);
  for (size_t i = 0; i < src.size(); ++i) {
    TORCH_CHECK_VALUE(src[i].device().is_cpu() && dst[i].device().is_cpu(),
                      "autellix::swap_blocks (CPU): layer ", i, " has tensors on ", src[i].device(), " and ",
                      dst[i].device(), "; CUDA tensors need the CUDA build of the op");
  }
  const int64_t n = plan.n;
  const int64_t total = n * static_cast<int64_t>(plan.layers.size());
  if (total == 0) return;
  const int64_t* m = plan.mapping.data_ptr<int64_t>();

  // One task per (layer, block) page; the grain keeps each thread's chunk >= ~256 KiB so small
  // pages do not drown in scheduling overhead.
  const int64_t page = std::max<int64_t>(plan.layers[0].page_bytes, 1);
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 18) / page);
  at::parallel_for(0, total, grain, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const LayerPlan& l = plan.layers[static_cast<size_t>(t / n)];
      const int64_t k = t % n;
      std::memcpy(l.dst + m[2 * k + 1] * l.dst_stride, l.src + m[2 * k] * l.src_stride,
                  static_cast<size_t>(l.page_bytes));
    }
  });
}

void swap_blocks_cpu(const at::Tensor& src, const at::Tensor& dst, const at::Tensor& block_mapping,
                     c10::string_view method) {
  swap_blocks_multi_cpu({src}, {dst}, block_mapping, method);
}

}  // namespace
}  // namespace autellix

// The `(a!)` marks dst as mutated in place, which keeps torch.compile / functionalization
// correct; a mutating op that returns nothing needs no fake (meta) kernel.
TORCH_LIBRARY(autellix, m) {
  m.def("swap_blocks(Tensor src, Tensor(a!) dst, Tensor block_mapping, str method=\"auto\") -> ()");
  m.def("swap_blocks_multi(Tensor[] src, Tensor(a!)[] dst, Tensor block_mapping, str method=\"auto\") -> ()");
}

TORCH_LIBRARY_IMPL(autellix, CPU, m) {
  m.impl("swap_blocks", &autellix::swap_blocks_cpu);
  m.impl("swap_blocks_multi", &autellix::swap_blocks_multi_cpu);
}
