#include <gtest/gtest.h>
#include "openmla/openmla.h"
TEST(Smoke, Version) { EXPECT_STREQ(openmla::version(), "0.1.0"); }
