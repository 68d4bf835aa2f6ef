# Per-file ISA flags. A file opts into an instruction set by its name suffix (_avx2.cpp,
# _avx512.cpp, _avx512bf16.cpp, _amx.cpp), wherever it lives (src/ for the kernels, tools/probes/
# for the CLI's peak probes); the dispatch layer only calls it after CPUID/XCR0 (and, for AMX, the
# kernel permission) say it can run. The AVX-512 set has no -mavx512bf16: those kernels run on
# AVX-512 hosts without the BF16 dot (Ice Lake); BF16-dot code goes in _avx512bf16.cpp files.
set(OPENMLA_FLAGS_AVX2 "-mavx2 -mfma -mf16c")
set(OPENMLA_FLAGS_AVX512 "${OPENMLA_FLAGS_AVX2} -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vbmi")
set(OPENMLA_FLAGS_AVX512BF16 "${OPENMLA_FLAGS_AVX512} -mavx512bf16")
set(OPENMLA_FLAGS_AMX "${OPENMLA_FLAGS_AVX512BF16} -mamx-tile -mamx-bf16")

# GCC 12's AVX-512 headers start many intrinsics from _mm512_undefined_*() (deliberately
# uninitialised), and once inlined -Wmaybe-uninitialized / -Wuninitialized report '__Y' inside
# avx512fintrin.h and avx512vbmiintrin.h: 147 + 2 false positives in a GCC 12.2 build of this tree,
# which buried real warnings and make -Werror impossible. GCC bug 105593, fixed in GCC 13. Only
# the ISA-suffixed files (the only ones compiled with -mavx512*) and only GCC < 13 lose the two
# warnings; every other file keeps them.
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
  set(OPENMLA_FLAGS_GCC105593 " -Wno-maybe-uninitialized -Wno-uninitialized")
else()
  set(OPENMLA_FLAGS_GCC105593 "")
endif()

function(openmla_set_isa_flags sources)
  foreach(src IN LISTS sources)
    if(src MATCHES "_amx\\.cpp$")
      set_source_files_properties(${src} PROPERTIES COMPILE_FLAGS "${OPENMLA_FLAGS_AMX}${OPENMLA_FLAGS_GCC105593}")
    elseif(src MATCHES "_avx512bf16\\.cpp$")
      set_source_files_properties(${src} PROPERTIES COMPILE_FLAGS "${OPENMLA_FLAGS_AVX512BF16}${OPENMLA_FLAGS_GCC105593}")
    elseif(src MATCHES "_avx512\\.cpp$")
      set_source_files_properties(${src} PROPERTIES COMPILE_FLAGS "${OPENMLA_FLAGS_AVX512}${OPENMLA_FLAGS_GCC105593}")
    elseif(src MATCHES "_avx2\\.cpp$")
      set_source_files_properties(${src} PROPERTIES COMPILE_FLAGS "${OPENMLA_FLAGS_AVX2}${OPENMLA_FLAGS_GCC105593}")
    endif()
  endforeach()
endfunction()
