// Write thresholds (QEMU's block-set-write-threshold): a node may carry an
// offset; the first write request reaching that node whose end passes it
// notifies the graph's listeners once and disarms the threshold.
//
// Contract: the dispatcher checks a node's threshold on every write,
// write-zeroes and discard request that reaches the node through its entry
// points (not on copy-on-read write-backs or truncation, as QEMU), before
// the request runs, with the range QEMU checks (a write padded to the
// request alignment, write-zeroes piece by piece, a discard as asked).
// Listeners run synchronously inside that check, after the threshold was
// set to 0; they may arm it again. The QMP server is one listener
// (BLOCK_WRITE_THRESHOLD); an embedder may add its own.
// Thread rules: loop-thread only.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>

namespace strata {

struct WriteThresholdEvent {
  std::string node_name;
  uint64_t amount_exceeded = 0;  // request end - threshold
  uint64_t write_threshold = 0;  // the threshold that was passed
};

// What a request [offset, offset + bytes) does to `threshold` (0: none):
// the event to send, if its end passes the threshold.
std::optional<WriteThresholdEvent> write_threshold_exceeded(const std::string& node_name,
                                                            uint64_t threshold, uint64_t offset,
                                                            uint64_t bytes);

using WriteThresholdListener = std::function<void(const WriteThresholdEvent&)>;

// The listeners of one Graph (Graph::write_threshold_listeners()).
class WriteThresholdListeners {
 public:
  uint64_t add(WriteThresholdListener listener);
  void remove(uint64_t id);
  void notify(const WriteThresholdEvent& event) const;

 private:
  std::map<uint64_t, WriteThresholdListener> listeners_;
  uint64_t next_id_ = 0;
};

}  // namespace strata
