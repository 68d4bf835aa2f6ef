// CPU feature detection (CPUID + XCR0 + the Linux AMX tile permission) and the ISA ladder used by
// the kernel registry. Kernels never test features themselves.
#pragma once

#include <string>

namespace openmla {

/// Ordered: a kernel built for level L runs on any host at level >= L. kAvx512 is AVX-512 F/BW/VL/
/// DQ/VBMI (the FMA kernels); kAvx512Bf16 adds the BF16 dot (vdpbf16ps: the *.avx512bf16 kernels
/// and the matmul peak probe); kAmx adds AMX-BF16 tiles.
enum class Isa : int { kNone = 0, kAvx2 = 1, kAvx512 = 2, kAvx512Bf16 = 3, kAmx = 4 };

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
  bool avx512_bf16 = false, avx512_fp16 = false, avx512vbmi = false, avx512_vnni = false;
  bool amx_tile = false, amx_bf16 = false, amx_int8 = false;
  bool os_avx = false, os_avx512 = false, os_amx = false;  // XCR0 state enabled by the OS
  bool amx_permitted = false;  // arch_prctl(ARCH_REQ_XCOMP_PERM) succeeded
  bool amd = false;            // vendor "AuthenticAMD" (the peak probes' documented rates)
  int family = 0, model = 0;   // CPUID leaf 1 display family and model (extended fields added)
};

/// Detected once (thread-safe); requests the AMX permission on first call.
const CpuFeatures& cpu_features();

/// Highest ISA level the host supports.
Isa host_isa();
/// host_isa() capped by OPENMLA_MAX_ISA (none|avx2|avx512|avx512bf16|amx); read at every call.
Isa effective_isa();

const char* isa_name(Isa isa);
/// Parses "none"/"ref", "avx2", "avx512", "avx512bf16", "amx"; returns false on anything else.
bool parse_isa(const std::string& text, Isa* isa);

std::string describe_cpu_features();

}  // namespace openmla
