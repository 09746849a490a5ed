#pragma once
// Umbrella header: everything a user of Strata needs.

#include "strata/big_modeling.h"
#include "strata/core/device.h"
#include "strata/core/dtype.h"
#include "strata/core/error.h"
#include "strata/core/logging.h"
#include "strata/core/parallel.h"
#include "strata/core/tensor.h"
#include "strata/models/models.h"
#include "strata/ops.h"
#include "strata/version.h"
