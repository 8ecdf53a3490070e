#include "block/core/write_threshold.h"

#include <vector>

namespace strata {

std::optional<WriteThresholdEvent> write_threshold_exceeded(const std::string& node_name,
                                                            uint64_t threshold, uint64_t offset,
                                                            uint64_t bytes) {
  uint64_t end = offset + bytes;
  if (threshold == 0 || end <= threshold) return std::nullopt;
  return WriteThresholdEvent{node_name, end - threshold, threshold};
}

uint64_t WriteThresholdListeners::add(WriteThresholdListener listener) {
  uint64_t id = next_id_++;
  listeners_.emplace(id, std::move(listener));
  return id;
}

void WriteThresholdListeners::remove(uint64_t id) {
  listeners_.erase(id);
}

void WriteThresholdListeners::notify(const WriteThresholdEvent& event) const {
  // A listener may add or remove listeners: call a copy.
  std::vector<WriteThresholdListener> current;
  for (const auto& [id, l] : listeners_) current.push_back(l);
  for (const auto& l : current) l(event);
}

}  // namespace strata
