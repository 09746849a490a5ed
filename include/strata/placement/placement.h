#pragma once
// Memory planning: sizes, budgets, device maps (see docs/placement.md).

#include "strata/placement/auto_device_map.h"    // IWYU pragma: export
#include "strata/placement/device_map_checks.h"  // IWYU pragma: export
#include "strata/placement/map_device.h"         // IWYU pragma: export
#include "strata/placement/memory.h"             // IWYU pragma: export
#include "strata/placement/module_sizes.h"       // IWYU pragma: export
