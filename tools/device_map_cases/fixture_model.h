#pragma once
// Models and values of the device-map case format ("device-map-cases/1",
// tests/fixtures/device_map/accelerate_cases.json), and the validity checks applied where the
// reference raised instead of answering.

#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "strata/nn/module.h"
#include "strata/placement/placement.h"

namespace strata::device_map_cases {

using nlohmann::json;

// A module tree of meta tensors built from a fixture model: {"modules": [{"name", "class"}...]
// (parents first), "tensors": [{"name", "kind", "shape", "dtype", "persistent"?}...],
// "tied": [[names bound to one tensor]...]}. Throws strata::Error on malformed input.
std::shared_ptr<nn::Module> build_model(const json& model);

// [[0, 200], ["cpu", "1GB"]]: GPU indices as integers, sizes as integers or strings.
placement::MaxMemory max_memory_from_json(const json& pairs);
json max_memory_to_json(const placement::MaxMemory& memory);
placement::DeviceMap device_map_from_json(const json& pairs);
std::string to_text(const json& value);

// Why `map` is not a valid plan for `model` under `budgets`, or nullopt when it is: every tensor
// covered by exactly one entry (entries never nest), every non-disk device within its budget
// (tensors counted once, at the given dtype), every tie group on one device.
std::optional<std::string> invalid_plan(nn::Module& model, const placement::DeviceMap& map,
                                        const placement::MaxMemory& budgets,
                                        const placement::SizeOptions& sizes);

}  // namespace strata::device_map_cases
