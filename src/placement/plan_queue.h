#pragma once
// The reference's modules_to_treat list as an intrusive doubly linked list over node ids: every
// operation the planner needs (pop the front, push at the front, remove or replace an entry in
// the middle) is O(1), where the reference's list slicing is O(n) per step.

#include <cstdint>
#include <vector>

namespace strata::placement::detail {

class PlanQueue {
 public:
  explicit PlanQueue(std::int32_t num_nodes)
      : next_(static_cast<std::size_t>(num_nodes), -1),
        prev_(static_cast<std::size_t>(num_nodes), -1),
        in_(static_cast<std::size_t>(num_nodes), 0) {}

  bool empty() const { return head_ < 0; }
  bool contains(std::int32_t id) const { return in_[id] != 0; }
  std::int32_t front() const { return head_; }
  // The entry after `id`, or -1.
  std::int32_t next(std::int32_t id) const { return next_[id]; }

  // Inserts `id` before `position` (-1: at the back).
  void insert_before(std::int32_t position, std::int32_t id) {
    const std::int32_t before = position < 0 ? tail_ : prev_[position];
    prev_[id] = before;
    next_[id] = position;
    (before < 0 ? head_ : next_[before]) = id;
    (position < 0 ? tail_ : prev_[position]) = id;
    in_[id] = 1;
  }
  void push_front(std::int32_t id) { insert_before(head_, id); }
  void push_back(std::int32_t id) { insert_before(-1, id); }

  void erase(std::int32_t id) {
    (prev_[id] < 0 ? head_ : next_[prev_[id]]) = next_[id];
    (next_[id] < 0 ? tail_ : prev_[next_[id]]) = prev_[id];
    next_[id] = prev_[id] = -1;
    in_[id] = 0;
  }
  std::int32_t pop_front() {
    const std::int32_t id = head_;
    erase(id);
    return id;
  }

 private:
  std::vector<std::int32_t> next_, prev_;
  std::vector<std::uint8_t> in_;
  std::int32_t head_ = -1, tail_ = -1;
};

}  // namespace strata::placement::detail
