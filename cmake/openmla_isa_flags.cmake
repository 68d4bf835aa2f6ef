# Per-file ISA flags. A kernel file opts into an instruction set by its name suffix; the dispatch
# layer only calls it after CPUID/XCR0 (and, for AMX, the kernel permission) say it can run.
set(OPENMLA_FLAGS_AVX2 "-mavx2 -mfma -mf16c")
set(OPENMLA_FLAGS_AVX512 "${OPENMLA_FLAGS_AVX2} -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512bf16 -mavx512vbmi")
set(OPENMLA_FLAGS_AMX "${OPENMLA_FLAGS_AVX512} -mamx-tile -mamx-bf16")

function(openmla_set_isa_flags sources)
  foreach(src IN LISTS sources)
    if(src MATCHES "_amx\\.cpp$")
      set_source_files_properties(${src} PROPERTIES COMPILE_FLAGS "${OPENMLA_FLAGS_AMX}")
    elseif(src MATCHES "_avx512\\.cpp$")
      set_source_files_properties(${src} PROPERTIES COMPILE_FLAGS "${OPENMLA_FLAGS_AVX512}")
    elseif(src MATCHES "_avx2\\.cpp$")
      set_source_files_properties(${src} PROPERTIES COMPILE_FLAGS "${OPENMLA_FLAGS_AVX2}")
    endif()
  endforeach()
endfunction()
