#include "core/log.h"

#include <cstdio>
#include <cstdlib>

namespace openmla {

int verbose_level() {
  const char* env = std::getenv("OPENMLA_VERBOSE");
  return env ? std::atoi(env) : 0;
}

void log_message(const std::string& message) { std::fprintf(stderr, "openmla: %s\n", message.c_str()); }

}  // namespace openmla
