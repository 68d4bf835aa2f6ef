// Kernel-parametrised GoogleTest helpers shared by the per-op kernel suites: the registered
// kernels of an op (the parameter list), lookup by name, and a gtest-safe parameter name.
#pragma once

#include <cctype>
#include <string>
#include <vector>

#include "dispatch/registry.h"

namespace openmla_test {

/// Names of the registered kernels of `op`, fastest first; without the reference (Isa::kNone)
/// when `fast_only`.
inline std::vector<std::string> kernel_names(openmla::Op op, bool fast_only = false) {
  std::vector<std::string> names;
  for (const openmla::KernelEntry* k : openmla::kernels_for(op))
    if (!fast_only || k->isa != openmla::Isa::kNone) names.push_back(k->name);
  return names;
}

/// The registered kernel of `op` called `name`, or nullptr.
inline const openmla::KernelEntry* find_kernel(openmla::Op op, const std::string& name) {
  for (const openmla::KernelEntry* k : openmla::kernels_for(op))
    if (name == k->name) return k;
  return nullptr;
}

/// `s` with every character that is not a letter or digit replaced by '_' (gtest names).
inline std::string test_name(std::string s) {
  for (char& ch : s)
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return s;
}

}  // namespace openmla_test
