// OPENMLA_VERBOSE: 0 (default) silent, 1 one line per plan naming the chosen kernel, 2 also every
// rejected kernel and why. Messages go to stderr with an "openmla:" prefix.
#pragma once

#include <string>

namespace openmla {

int verbose_level();
void log_message(const std::string& message);

}  // namespace openmla
