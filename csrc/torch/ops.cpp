// The schemas of every jsla op, in one place. Device implementations register elsewhere
// (cpu.cpp here; CUDA in csrc/cuda); fake (meta) kernels and autograd are registered from
// Python (jsla_fast/ops/extension.py) so torch.compile and training work.
#include <Python.h>
#include <torch/library.h>

TORCH_LIBRARY(jsla, m) {
  // (F [B,C,h,w], Eh [B,C,h,w], W [1,C,k,k], b [1], slope) -> (O = F*alpha [B,C,h,w], alpha [B,1,h,w])
  m.def("attention(Tensor feat, Tensor eh, Tensor weight, Tensor bias, float slope) -> (Tensor, Tensor)");
  // (x [B,D,H,W], h, c [B,hid,H,W], weights[b] [4n,D+hid,k_b,k_b], biases[b] [4n]) -> (h', c')
  m.def("convlstm_step(Tensor x, Tensor h, Tensor c, Tensor[] weights, Tensor[] biases) -> (Tensor, Tensor)");
  // x [B,C,H,W] -> F.max_pool2d(x, kernel, stride, padding, ceil_mode=ceil_mode), channels-last
  // (CPU only: the backbone's pools in the Localizer's onednn executor)
  m.def("max_pool2d(Tensor x, int[2] kernel, int[2] stride, int[2] padding, bool ceil_mode) -> Tensor");
}

// `import jsla_fast._C` loads this library, which registers the ops above.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
