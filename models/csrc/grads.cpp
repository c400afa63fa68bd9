// Gradient housekeeping that tch does not expose: clearing a parameter's gradient to
// undefined (PyTorch's `zero_grad(set_to_none=True)`, the default of torch.optim and of
// transformers' Trainer). The next backward then hands its gradient buffer to the parameter
// instead of adding it into a tensor of zeros: no fill and no add per parameter and step.
#include <ATen/core/Tensor.h>

extern "C" {

// Clears the gradients of `n` tensors (tch's `C_tensor` is an `at::Tensor *`). Returns 0, or 1
// when libtorch raised (nothing is cleared past that tensor).
int quern_clear_grads(at::Tensor **ts, int n) {
  try {
    for (int i = 0; i < n; ++i) {
      at::Tensor &g = ts[i]->mutable_grad();
      if (g.defined()) g.reset();
    }
    return 0;
  } catch (...) {
    return 1;
  }
}
}
