#pragma once
// The models layer in one include: configs, the model families, the KV cache and generation.

#include "strata/models/causal_lm.h"
#include "strata/models/config.h"
#include "strata/models/decoder.h"
#include "strata/models/deepseek.h"
#include "strata/models/gemma.h"
#include "strata/models/gpt2.h"
#include "strata/models/gpt_oss.h"
#include "strata/models/kv_cache.h"
#include "strata/models/layers.h"
#include "strata/models/moe.h"
#include "strata/models/opt.h"
#include "strata/models/phi3.h"
#include "strata/models/pipeline.h"
#include "strata/models/quant_config.h"
#include "strata/models/quant_linear.h"
#include "strata/models/rope.h"
