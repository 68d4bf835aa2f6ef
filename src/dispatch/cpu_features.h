// CPU feature detection (CPUID + XCR0 + the Linux AMX tile permission) and the ISA ladder used by
// the kernel registry. Kernels never test features themselves.
#pragma once

#include <string>

namespace openmla {

/// Ordered: a kernel built for level L runs on any host at level >= L.
enum class Isa : int { kNone = 0, kAvx2 = 1, kAvx512 = 2, kAmx = 3 };

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
  bool avx512_bf16 = false, avx512_fp16 = false, avx512vbmi = false;
  bool amx_tile = false, amx_bf16 = false, amx_int8 = false;
  bool os_avx = false, os_avx512 = false, os_amx = false;  // XCR0 state enabled by the OS
  bool amx_permitted = false;  // arch_prctl(ARCH_REQ_XCOMP_PERM) succeeded
};

/// Detected once (thread-safe); requests the AMX permission on first call.
const CpuFeatures& cpu_features();

/// Highest ISA level the host supports.
Isa host_isa();
/// host_isa() capped by OPENMLA_MAX_ISA (none|avx2|avx512|amx); read at every call.
Isa effective_isa();

const char* isa_name(Isa isa);
/// Parses "none"/"ref", "avx2", "avx512", "amx"; returns false on anything else.
bool parse_isa(const std::string& text, Isa* isa);

std::string describe_cpu_features();

}  // namespace openmla
