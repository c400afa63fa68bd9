// quern's C++ sidecar: the few libtorch calls tch does not expose.
//
// tch's autocast is fp16-only, its optimizers keep their state out of reach and it has no
// TF32 switch. These functions are compiled against the same torch headers as tch's own
// wrapper and take tch's tensor handles (`at::Tensor*`). Every function catches C++
// exceptions and returns them as a malloc'd message (NULL on success), which Rust frees
// with `quern_free_error`.
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/autocast_mode.h>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {
char *dup_error(const std::string &msg) {
  char *out = static_cast<char *>(std::malloc(msg.size() + 1));
  if (out != nullptr) {
    std::memcpy(out, msg.c_str(), msg.size() + 1);
  }
  return out;
}

at::DeviceType device_type(int cuda) { return cuda ? at::kCUDA : at::kCPU; }

at::ScalarType scalar_type(int dtype) {
  // 0 = bf16, 1 = fp16
  return dtype == 1 ? at::kHalf : at::kBFloat16;
}

std::vector<at::Tensor> gather(at::Tensor **ts, int n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (int i = 0; i < n; ++i) {
    out.push_back(*ts[i]);
  }
  return out;
}
}  // namespace

#define QUERN_TRY(...)                                   \
  try {                                                  \
    __VA_ARGS__;                                         \
    return nullptr;                                      \
  } catch (const std::exception &e) {                    \
    return dup_error(e.what());                          \
  } catch (...) {                                        \
    return dup_error("unknown C++ exception in libtorch"); \
  }

extern "C" {

void quern_free_error(char *err) { std::free(err); }

// Enters (enabled = 1) or leaves (enabled = 0) an autocast region for a device type with the
// given low-precision dtype, like `torch.autocast(device, dtype)`.
char *quern_autocast(int cuda, int enabled, int dtype) {
  QUERN_TRY({
    at::DeviceType dev = device_type(cuda);
    if (enabled) {
      at::autocast::set_autocast_dtype(dev, scalar_type(dtype));
      at::autocast::set_autocast_enabled(dev, true);
      at::autocast::increment_nesting();
    } else {
      at::autocast::set_autocast_enabled(dev, false);
      if (at::autocast::decrement_nesting() == 0) {
        at::autocast::clear_cache();
      }
    }
  })
}

// Whether autocast is on for the device type (for tests).
int quern_autocast_enabled(int cuda) { return at::autocast::is_autocast_enabled(device_type(cuda)) ? 1 : 0; }

// TF32 for matmuls and cuDNN convolutions (no effect on CPU).
char *quern_set_tf32(int enabled) {
  QUERN_TRY({
    at::globalContext().setAllowTF32CuBLAS(enabled != 0);
    at::globalContext().setAllowTF32CuDNN(enabled != 0);
  })
}

// One fused AdamW step (`torch.optim.AdamW(fused=True)`) over n parameters. `steps` are
// float32 scalar tensors holding the step count including this step. Decoupled weight decay applies to all
// tensors passed: call it once per parameter group.
char *quern_fused_adamw(at::Tensor **params, at::Tensor **grads, at::Tensor **exp_avgs, at::Tensor **exp_avg_sqs,
                        at::Tensor **steps, int n, double lr, double beta1, double beta2, double weight_decay,
                        double eps) {
  QUERN_TRY({
    std::vector<at::Tensor> p = gather(params, n), g = gather(grads, n), m = gather(exp_avgs, n),
                            v = gather(exp_avg_sqs, n), s = gather(steps, n);
    std::vector<at::Tensor> max_v;
    at::_fused_adamw_(p, g, m, v, max_v, s, lr, beta1, beta2, weight_decay, eps, false, false);
  })
}
}
