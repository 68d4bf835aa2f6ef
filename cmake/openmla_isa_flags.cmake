# Per-file ISA flags. A file opts into an instruction set by its name suffix (_avx2.cpp,
# _avx512.cpp, _avx512bf16.cpp, _amx.cpp), wherever it lives (src/ for the kernels, tools/probes/
# for the CLI's peak probes); the dispatch layer only calls it after CPUID/XCR0 (and, for AMX, the
# kernel permission) say it can run. The AVX-512 set has no -mavx512bf16: those kernels run on
# AVX-512 hosts without the BF16 dot (Ice Lake); BF16-dot code goes in _avx512bf16.cpp files.
set(OPENMLA_FLAGS_AVX2 "-mavx2 -mfma -mf16c")
set(OPENMLA_FLAGS_AVX512 "${OPENMLA_FLAGS_AVX2} -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vbmi")
set(OPENMLA_FLAGS_AVX512BF16 "${OPENMLA_FLAGS_AVX512} -mavx512bf16")
set(OPENMLA_FLAGS_AMX "${OPENMLA_FLAGS_AVX512BF16} -mamx-tile -mamx-bf16")

function(openmla_set_isa_flags sources)
  foreach(src IN LISTS sources)
    if(src MATCHES "_amx\\.cpp$")
      set_source_files_properties(${src} PROPERTIES COMPILE_FLAGS "${OPENMLA_FLAGS_AMX}")
    elseif(src MATCHES "_avx512bf16\\.cpp$")
      set_source_files_properties(${src} PROPERTIES COMPILE_FLAGS "${OPENMLA_FLAGS_AVX512BF16}")
    elseif(src MATCHES "_avx512\\.cpp$")
      set_source_files_properties(${src} PROPERTIES COMPILE_FLAGS "${OPENMLA_FLAGS_AVX512}")
    elseif(src MATCHES "_avx2\\.cpp$")
      set_source_files_properties(${src} PROPERTIES COMPILE_FLAGS "${OPENMLA_FLAGS_AVX2}")
    endif()
  endforeach()
endfunction()
