#include <cstdio>
#include "openmla/openmla.h"
int main() { std::printf("%s\n", openmla::version()); }
