#pragma once
// Device-map hygiene: merging, coverage and tie checks (Accelerate's clean_device_map,
// check_device_map and check_tied_parameters_on_same_device).

#include <string>
#include <vector>

#include "strata/nn/module.h"
#include "strata/placement/map_device.h"

namespace strata::placement {

// Replaces the entries under a module by one entry for the module when they all name the same
// device (and there are at least two), from the root down: {"a.x": 0, "a.y": 0, "b": 1} ->
// {"a": 0, "b": 1}; {"a": 0, "b": 0} -> {"": 0}. A merged entry takes the place of the first entry
// it replaces, so the result is deterministic (the reference's order varies between runs).
// Linear in the total length of the names.
DeviceMap clean_device_map(DeviceMap map);

// Throws InvalidArgument listing the checkpoint tensors (parameters and persistent buffers, tied
// names included) that no entry covers, with what to add. Entries naming neither a module nor a
// tensor of the model are logged as a warning (they are ignored).
void check_device_map(nn::Module& model, const DeviceMap& map);

// The tie groups (find_tied_parameters) whose members the map sends to different devices, each
// logged as a warning. A name no entry covers is InvalidArgument.
std::vector<std::vector<std::string>> check_tied_parameters_on_same_device(nn::Module& model,
                                                                           const DeviceMap& map);

}  // namespace strata::placement
