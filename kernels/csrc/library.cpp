// The ops of the ollamapy_native library: their schemas here, their CPU kernels beside
// (int4_vnni.cpp, int8_vnni.cpp, kquant_vnni.cpp, attention.cpp), their Python side in
// kernels/int4_vnni.py, int8_vnni.py, kquant_vnni.py and attention.py.

#include <torch/library.h>

#include "vnni.h"

namespace {
bool has_vnni() { return ollamapy_native::cpu_has_vnni(); }
}  // namespace

TORCH_LIBRARY(ollamapy_native, m) {
  m.def("has_vnni() -> bool", &has_vnni);
  m.def("int4_mm(Tensor x, Tensor blocks) -> Tensor");
  m.def("int8_mm(Tensor x, Tensor codes, Tensor scales) -> Tensor");
  m.def("q4k_mm(Tensor x, Tensor blocks) -> Tensor");
  m.def("q6k_mm(Tensor x, Tensor blocks) -> Tensor");
  m.def("span_attention(Tensor q, Tensor k, Tensor v, Tensor mask, float scale, float cap, "
        "Tensor? sinks) -> Tensor");
}
