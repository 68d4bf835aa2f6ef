#include "dispatch/cpu_features.h"

#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>

#include "openmla/core.h"

namespace openmla {
namespace {

constexpr int kArchReqXcompPerm = 0x1023;
constexpr int kXfeatureXtiledata = 18;

uint64_t read_xcr0() {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
}

/// Vendor, display family and model (Intel SDM vol. 2A, CPUID leaf 0 and leaf 1 EAX).
void detect_vendor(CpuFeatures* f) {
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid(0, &eax, &ebx, &ecx, &edx)) return;
  f->amd = ebx == 0x68747541 && edx == 0x69746e65 && ecx == 0x444d4163;  // "AuthenticAMD"
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return;
  const int base_family = (eax >> 8) & 0xF, base_model = (eax >> 4) & 0xF;
  f->family = base_family == 0xF ? base_family + ((eax >> 20) & 0xFF) : base_family;
  f->model = base_family >= 0x6 ? base_model | (((eax >> 16) & 0xF) << 4) : base_model;
}

CpuFeatures detect() {
  CpuFeatures f;
  detect_vendor(&f);
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return f;
  const bool osxsave = ecx & (1u << 27);
  f.fma = ecx & (1u << 12);
  f.f16c = ecx & (1u << 29);
  if (osxsave) {
    const uint64_t xcr0 = read_xcr0();
    f.os_avx = (xcr0 & 0x6) == 0x6;
    f.os_avx512 = f.os_avx && (xcr0 & 0xE0) == 0xE0;
    f.os_amx = (xcr0 & 0x60000) == 0x60000;
  }
  if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) {
    f.avx2 = ebx & (1u << 5);
    f.avx512f = ebx & (1u << 16);
    f.avx512dq = ebx & (1u << 17);
    f.avx512bw = ebx & (1u << 30);
    f.avx512vl = ebx & (1u << 31);
    f.avx512vbmi = ecx & (1u << 1);
    f.avx512_vnni = ecx & (1u << 11);
    f.avx512_fp16 = edx & (1u << 23);
    f.amx_bf16 = edx & (1u << 22);
    f.amx_tile = edx & (1u << 24);
    f.amx_int8 = edx & (1u << 25);
  }
  // Leaf 7 subleaf 1 exists only where leaf 7 subleaf 0 reports it (EAX = max subleaf).
  if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) && eax >= 1 &&
      __get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx))
    f.avx512_bf16 = eax & (1u << 5);
  if (f.amx_tile && f.os_amx) {
    f.amx_permitted = syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  }
  return f;
}

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = detect();
  return features;
}

Isa host_isa() {
  const CpuFeatures& f = cpu_features();
  const bool avx2 = f.os_avx && f.avx2 && f.fma && f.f16c;
  const bool avx512 =
      avx2 && f.os_avx512 && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.avx512vbmi;
  const bool avx512bf16 = avx512 && f.avx512_bf16;
  const bool amx = avx512bf16 && f.amx_tile && f.amx_bf16 && f.amx_permitted;
  if (amx) return Isa::kAmx;
  if (avx512bf16) return Isa::kAvx512Bf16;
  return avx512 ? Isa::kAvx512 : avx2 ? Isa::kAvx2 : Isa::kNone;
}

Isa effective_isa() {
  Isa isa = host_isa();
  Isa cap;
  const char* env = std::getenv("OPENMLA_MAX_ISA");
  if (env && parse_isa(env, &cap) && cap < isa) isa = cap;
  return isa;
}

namespace {
struct IsaName {
  Isa isa;
  const char* name;
};
constexpr IsaName kIsaNames[] = {{Isa::kNone, "none"},
                                 {Isa::kAvx2, "avx2"},
                                 {Isa::kAvx512, "avx512"},
                                 {Isa::kAvx512Bf16, "avx512bf16"},
                                 {Isa::kAmx, "amx"}};
}  // namespace

const char* isa_name(Isa isa) {
  for (const IsaName& n : kIsaNames)
    if (n.isa == isa) return n.name;
  return "unknown";
}

bool parse_isa(const std::string& text, Isa* isa) {
  const std::string name = text == "ref" ? "none" : text;
  for (const IsaName& n : kIsaNames) {
    if (name != n.name) continue;
    *isa = n.isa;
    return true;
  }
  return false;
}

std::string describe_cpu_features() {
  const CpuFeatures& f = cpu_features();
  std::string s;
  auto add = [&](bool on, const char* name) {
    if (on) s += (s.empty() ? "" : " ") + std::string(name);
  };
  add(f.avx2, "avx2");
  add(f.fma, "fma");
  add(f.f16c, "f16c");
  add(f.avx512f, "avx512f");
  add(f.avx512bw, "avx512bw");
  add(f.avx512vl, "avx512vl");
  add(f.avx512dq, "avx512dq");
  add(f.avx512vbmi, "avx512vbmi");
  add(f.avx512_vnni, "avx512_vnni");
  add(f.avx512_bf16, "avx512_bf16");
  add(f.avx512_fp16, "avx512_fp16");
  add(f.amx_tile, "amx_tile");
  add(f.amx_bf16, "amx_bf16");
  add(f.amx_int8, "amx_int8");
  if (f.amx_tile) s += f.amx_permitted ? " (amx permitted)" : " (amx not permitted by the OS)";
  if (s.empty()) s = "(no AVX2)";
  return s;
}

std::string cpu_features_string() { return describe_cpu_features(); }

}  // namespace openmla
