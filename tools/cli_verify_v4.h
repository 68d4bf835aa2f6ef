// `openmla verify --op compressor|mhc|engram` (cli_verify_v4.cpp): every runnable kernel of the
// V4 blocks against its `.ref` kernel over random cases (testing/v4_block_cases.h).
#pragma once

#include <cstdint>
#include <string>

namespace openmla::cli {

struct VerifyTally {
  int passed = 0, failed = 0, skipped = 0;
};

/// `op`: "compressor", "mhc" or "engram"; prints one line per op x kernel.
VerifyTally verify_v4_block(const std::string& op, int cases, uint64_t seed);

}  // namespace openmla::cli
