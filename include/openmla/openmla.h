// openmla: FlashMLA's attention kernels (DeepSeek V3.2 and V4) for CPUs, one header to include.
#pragma once

#include "openmla/attention.h"
#include "openmla/core.h"
#include "openmla/indexer.h"
#include "openmla/kv_cache.h"
#include "openmla/v4_blocks.h"
