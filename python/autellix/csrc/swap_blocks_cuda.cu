// CUDA kernels of torch.ops.autellix.swap_blocks / swap_blocks_multi (schemas in swap_blocks.cpp).
//
// All pages of all layers move in ONE operation on the current stream, never one
// cudaMemcpyAsync per block:
//   method "kernel":       one launch, grid (pair, layer), each CTA copies one page with 16-byte
//                          loads/stores when everything is 16-byte aligned. Works GPU<->GPU and
//                          GPU<->pinned host: pinned memory is mapped into the device address
//                          space (UVA), so the kernel reads/writes it zero-copy over PCIe/NVLink-C2C.
//   method "memcpy_batch": one cudaMemcpyBatchAsync (CUDA >= 12.8 runtime and driver) with a
//                          descriptor per page; the copy engines move the data, no SM is used.
//                          Host<->device only, and not on the legacy default stream (the API
//                          refuses it).
//   method "auto":         memcpy_batch for host<->device copies whose pages are at least
//                          kAutoBatchMinPageBytes when it is available and the current stream is
//                          not the legacy default stream, else kernel. Small pages go to the
//                          kernel because DMA descriptors cost per page (vLLM measured batched
//                          DMA at ~5-7 GB/s for 4-24 KiB H2D pages on H100, PR #42212), and
//                          device-to-device copies always do (HBM bandwidth, no PCIe).
//
// Only c10/cuda headers are included: ATen/cuda/CUDAContext.h pulls cuBLAS/cuSPARSE headers
// that the pip CUDA toolkit used for CI builds does not ship.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#include <torch/library.h>

#include <cstring>

#include "swap_blocks.h"

namespace autellix {
namespace {

constexpr int64_t kAutoBatchMinPageBytes = 32 * 1024;
constexpr int kThreads = 256;

// One CTA per (pair, layer): blockIdx.x is the mapping row, blockIdx.y the layer.
template <typename V>
__global__ void swap_pages_kernel(const LayerPlan* __restrict__ layers, const int64_t* __restrict__ mapping) {
  const LayerPlan l = layers[blockIdx.y];
  const int64_t k = blockIdx.x;
  const V* __restrict__ src = reinterpret_cast<const V*>(l.src + mapping[2 * k] * l.src_stride);
  V* __restrict__ dst = reinterpret_cast<V*>(l.dst + mapping[2 * k + 1] * l.dst_stride);
  const int64_t nvec = l.page_bytes / static_cast<int64_t>(sizeof(V));
  // Unrolled so each thread keeps several loads in flight: that is what hides PCIe latency
  // when src is pinned host memory.
#pragma unroll 4
  for (int64_t i = threadIdx.x; i < nvec; i += blockDim.x) {
    dst[i] = src[i];
  }
}

// The widest access every page start and length allows; alignment is uniform across the
// launch so one template instance serves it.
int vector_width(const std::vector<LayerPlan>& layers) {
  uintptr_t bits = 0;
  for (const LayerPlan& l : layers) {
    bits |= reinterpret_cast<uintptr_t>(l.src) | reinterpret_cast<uintptr_t>(l.dst) |
            static_cast<uintptr_t>(l.src_stride) | static_cast<uintptr_t>(l.dst_stride) |
            static_cast<uintptr_t>(l.page_bytes);
  }
  for (int w : {16, 8, 4}) {
    if ((bits & static_cast<uintptr_t>(w - 1)) == 0) return w;
  }
  return 1;
}

bool batch_memcpy_available() {
#if CUDART_VERSION >= 12080
  static const bool ok = [] {
    int driver = 0;
    return cudaDriverGetVersion(&driver) == cudaSuccess && driver >= 12080;
  }();
  return ok;
#else
  return false;
#endif
}

// Pointer the device can dereference for `p`: itself for device memory; for pinned host memory
// its mapped device alias (equal to p under UVA for cudaHostAlloc memory; asked for rather than
// assumed, so cudaHostRegister'ed memory works too).
const void* device_alias(const void* p) {
  cudaPointerAttributes attr{};
  C10_CUDA_CHECK(cudaPointerGetAttributes(&attr, p));
  TORCH_CHECK(attr.devicePointer != nullptr, "autellix::swap_blocks: host pointer ", p,
              " has no device mapping");
  return attr.devicePointer;
}

void launch_kernel(const SwapPlan& plan, const std::vector<LayerPlan>& device_layers, at::Device device,
                   cudaStream_t stream) {
  const int64_t n = plan.n;
  const int64_t num_layers = static_cast<int64_t>(device_layers.size());
  TORCH_CHECK_VALUE(num_layers <= 65535, "autellix::swap_blocks: at most 65535 layers per call, got ",
                    num_layers);
  TORCH_CHECK_VALUE(n <= 0x7fffffff, "autellix::swap_blocks: at most 2^31-1 mapping rows per call, got ", n);

  // Layer table and mapping travel in one pinned staging buffer and one async H2D copy. The
  // caching host allocator keeps the staging buffer alive until that copy has run, and the
  // device copy is freed into the current stream's pool, which the kernel runs on.
  const size_t layer_bytes = device_layers.size() * sizeof(LayerPlan);
  const size_t map_bytes = static_cast<size_t>(n) * 2 * sizeof(int64_t);
  at::Tensor staging =
      at::empty({static_cast<int64_t>(layer_bytes + map_bytes)},
                at::TensorOptions().dtype(at::kByte).pinned_memory(true));
  auto* base = static_cast<char*>(staging.data_ptr());
  std::memcpy(base, device_layers.data(), layer_bytes);
  std::memcpy(base + layer_bytes, plan.mapping.data_ptr<int64_t>(), map_bytes);
  at::Tensor on_device = at::empty({staging.numel()}, at::TensorOptions().dtype(at::kByte).device(device));
  on_device.copy_(staging, /*non_blocking=*/true);
  const auto* d_layers = reinterpret_cast<const LayerPlan*>(on_device.data_ptr());
  const auto* d_mapping =
      reinterpret_cast<const int64_t*>(static_cast<char*>(on_device.data_ptr()) + layer_bytes);

  const dim3 grid(static_cast<unsigned>(n), static_cast<unsigned>(num_layers));
  switch (vector_width(device_layers)) {
    case 16:
      swap_pages_kernel<uint4><<<grid, kThreads, 0, stream>>>(d_layers, d_mapping);
      break;
    case 8:
      swap_pages_kernel<uint2><<<grid, kThreads, 0, stream>>>(d_layers, d_mapping);
      break;
    case 4:
      swap_pages_kernel<uint32_t><<<grid, kThreads, 0, stream>>>(d_layers, d_mapping);
      break;
    default:
      swap_pages_kernel<uint8_t><<<grid, kThreads, 0, stream>>>(d_layers, d_mapping);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void launch_memcpy_batch(const SwapPlan& plan, at::Device src_device, at::Device dst_device,
                         cudaStream_t stream) {
#if CUDART_VERSION >= 12080
  const int64_t* m = plan.mapping.data_ptr<int64_t>();
  const size_t count = static_cast<size_t>(plan.n) * plan.layers.size();
  std::vector<void*> dsts;
  std::vector<void*> srcs;
  std::vector<size_t> sizes;
  dsts.reserve(count);
  srcs.reserve(count);
  sizes.reserve(count);
  for (const LayerPlan& l : plan.layers) {
    for (int64_t k = 0; k < plan.n; ++k) {
      srcs.push_back(const_cast<char*>(l.src) + m[2 * k] * l.src_stride);
      dsts.push_back(l.dst + m[2 * k + 1] * l.dst_stride);
      sizes.push_back(static_cast<size_t>(l.page_bytes));
    }
  }
  auto location = [](at::Device d) {
    cudaMemLocation loc{};
    loc.type = d.is_cuda() ? cudaMemLocationTypeDevice : cudaMemLocationTypeHost;
    loc.id = d.is_cuda() ? d.index() : 0;
    return loc;
  };
  // One attribute set for every copy: read the source in stream order (earlier kernels on
  // this stream may still be writing it).
  cudaMemcpyAttributes attr{};
  attr.srcAccessOrder = cudaMemcpySrcAccessOrderStream;
  attr.srcLocHint = location(src_device);
  attr.dstLocHint = location(dst_device);
  attr.flags = cudaMemcpyFlagPreferOverlapWithCompute;
  size_t attr_index = 0;
#if CUDART_VERSION >= 13000
  C10_CUDA_CHECK(
      cudaMemcpyBatchAsync(dsts.data(), srcs.data(), sizes.data(), count, &attr, &attr_index, 1, stream));
#else
  // CUDA 12.8-12.9 report the failing copy's index; CUDA 13 dropped the argument.
  size_t fail_index = 0;
  C10_CUDA_CHECK(cudaMemcpyBatchAsync(dsts.data(), srcs.data(), sizes.data(), count, &attr, &attr_index, 1,
                                      &fail_index, stream));
#endif
#else
  TORCH_CHECK(false, "autellix::swap_blocks: method 'memcpy_batch' needs a CUDA >= 12.8 build");
#endif
}

void swap_blocks_multi_cuda(at::TensorList src, at::TensorList dst, const at::Tensor& block_mapping,
                            c10::string_view method_name) {
  const Method method = parse_method(std::string(method_name));
  SwapPlan plan = make_plan(src, dst, block_mapping);
  if (plan.n == 0 || plan.layers.empty()) return;

  // One device per side; CUDA tensors all on the same GPU; host tensors pinned. (Both sides on
  // the host reach the CPU kernel: the dispatcher picks CUDA only when a CUDA tensor is present.)
  const at::Device src_device = src[0].device();
  const at::Device dst_device = dst[0].device();
  for (size_t i = 0; i < src.size(); ++i) {
    TORCH_CHECK_VALUE(src[i].device() == src_device && dst[i].device() == dst_device,
                      "autellix::swap_blocks: layer ", i, " is on ", src[i].device(), " -> ", dst[i].device(),
                      ", layer 0 on ", src_device, " -> ", dst_device, "; all layers must match");
    for (const at::Tensor* t : {&src[i], &dst[i]}) {
      TORCH_CHECK_VALUE(t->is_cuda() || (t->device().is_cpu() && t->is_pinned()),
                        "autellix::swap_blocks: layer ", i, ": host tensors must be in pinned memory ",
                        "(tensor.pin_memory()); got a pageable or non-CUDA tensor on ", t->device());
    }
  }
  TORCH_CHECK_VALUE(!(src_device.is_cuda() && dst_device.is_cuda()) || src_device == dst_device,
                    "autellix::swap_blocks: src on ", src_device, " and dst on ", dst_device,
                    "; copies between two GPUs are not supported");
  const at::Device device = src_device.is_cuda() ? src_device : dst_device;
  const c10::cuda::CUDAGuard guard(device);
  const c10::cuda::CUDAStream stream = c10::cuda::getCurrentCUDAStream(device.index());
  const bool host_transfer = src_device.is_cpu() || dst_device.is_cpu();
  // The batch API refuses the legacy NULL stream (torch's default stream unless a side stream
  // is current).
  const bool legacy_stream = stream.stream() == nullptr || stream.stream() == cudaStreamLegacy;

  bool use_batch = false;
  if (method == Method::kMemcpyBatch) {
    TORCH_CHECK_VALUE(host_transfer, "autellix::swap_blocks: method 'memcpy_batch' is for host<->device ",
                      "copies; use 'kernel' or 'auto' on device-to-device copies");
    TORCH_CHECK_VALUE(batch_memcpy_available(), "autellix::swap_blocks: method 'memcpy_batch' needs a CUDA ",
                      ">= 12.8 runtime and driver");
    TORCH_CHECK_VALUE(!legacy_stream, "autellix::swap_blocks: method 'memcpy_batch' cannot run on the ",
                      "legacy default stream; make a side stream current (with torch.cuda.stream(s): ...)");
    use_batch = true;
  } else if (method == Method::kAuto) {
    use_batch = host_transfer && batch_memcpy_available() && !legacy_stream &&
                plan.layers[0].page_bytes >= kAutoBatchMinPageBytes;
  }
  if (use_batch) {
    launch_memcpy_batch(plan, src_device, dst_device, stream.stream());
    return;
  }

  std::vector<LayerPlan> device_layers = plan.layers;
  for (LayerPlan& l : device_layers) {
    if (src_device.is_cpu()) l.src = static_cast<const char*>(device_alias(l.src));
    if (dst_device.is_cpu()) l.dst = static_cast<char*>(const_cast<void*>(device_alias(l.dst)));
  }
  launch_kernel(plan, device_layers, device, stream.stream());
}

void swap_blocks_cuda(const at::Tensor& src, const at::Tensor& dst, const at::Tensor& block_mapping,
                      c10::string_view method) {
  swap_blocks_multi_cuda({src}, {dst}, block_mapping, method);
}

}  // namespace
}  // namespace autellix

TORCH_LIBRARY_IMPL(autellix, CUDA, m) {
  m.impl("swap_blocks", &autellix::swap_blocks_cuda);
  m.impl("swap_blocks_multi", &autellix::swap_blocks_multi_cuda);
}
