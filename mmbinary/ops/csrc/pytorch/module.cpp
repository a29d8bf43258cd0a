// Copyright (c) mmbinary contributors. All rights reserved.
// The Python module mmbinary._C. Importing it runs the TORCH_LIBRARY
// registrations of every op (torch.ops.mmbinary.*) and exposes how the
// extension was built. No pybind11: the ops are reached through torch.ops.
#include <Python.h>

#include "../common/cpu_features.h"

#ifdef MMBINARY_WITH_CUDA
static const int kWithCuda = 1;
#else
static const int kWithCuda = 0;
#endif

extern "C" PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C",
      "mmbinary's compiled ops, registered as torch.ops.mmbinary.*", -1,
      nullptr};
  PyObject* module = PyModule_Create(&module_def);
  if (module == nullptr) return nullptr;
  const std::string runtime =
      mmbinary::cpu_features_string(mmbinary::detect_cpu_features());
  PyModule_AddIntConstant(module, "with_cuda", kWithCuda);
  PyModule_AddIntConstant(module, "with_openmp",
#ifdef _OPENMP
                          1
#else
                          0
#endif
  );
  // ISA variants compiled in; the kernels pick one at run time.
  PyModule_AddStringConstant(module, "compiled_cpu_kernels",
                             MMBINARY_COMPILED_CPU_KERNELS);
  PyModule_AddStringConstant(module, "runtime_cpu_features", runtime.c_str());
  PyModule_AddStringConstant(module, "cuda_arch_list", MMBINARY_CUDA_ARCH_LIST);
  return module;
}
