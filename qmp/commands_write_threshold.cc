// block-set-write-threshold and BLOCK_WRITE_THRESHOLD.
#include "qmp/commands_write_threshold.h"

#include "block/core/graph.h"
#include "qmp/context.h"

namespace strata::qmp {

namespace {

// Forwards the graph's threshold events to the monitors while the context
// lives.
class WriteThresholdEventBridge {
 public:
  explicit WriteThresholdEventBridge(QmpContext& ctx) : ctx_(ctx) {
    listener_ = listeners().add([this](const WriteThresholdEvent& e) { emit(e); });
  }
  ~WriteThresholdEventBridge() { listeners().remove(listener_); }

 private:
  WriteThresholdListeners& listeners() { return ctx_.engine().graph().write_threshold_listeners(); }
  void emit(const WriteThresholdEvent& e) {
    ctx_.emit_event("BLOCK_WRITE_THRESHOLD", {{"node-name", e.node_name},
                                              {"amount-exceeded", e.amount_exceeded},
                                              {"write-threshold", e.write_threshold}});
  }
  QmpContext& ctx_;
  uint64_t listener_;
};

// A validated uint64 argument; QEMU takes negative numbers modulo 2^64.
uint64_t uint64_value(const json& v) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  return static_cast<uint64_t>(v.get<int64_t>());
}

Task<Result<json>> co_block_set_write_threshold(QmpContext& ctx, json args) {
  std::string name = args["node-name"];
  Node* node = ctx.engine().graph().find(name);
  if (!node) co_return Error{ENODEV, "Device '" + name + "' not found"};
  node->set_write_threshold(uint64_value(args["write-threshold"]));
  co_return json::object();
}

}  // namespace

void register_write_threshold_commands(QmpContext& ctx) {
  CommandRegistry& r = ctx.registry();
  r.schema().add_object(
      "q_obj_BLOCK_WRITE_THRESHOLD-arg",
      {{"node-name", "str"}, {"amount-exceeded", "uint64"}, {"write-threshold", "uint64"}});
  r.add({.name = "block-set-write-threshold",
         .args = {{"node-name", "str"}, {"write-threshold", "uint64"}},
         .handler = co_block_set_write_threshold});
  r.add_event({"BLOCK_WRITE_THRESHOLD", "q_obj_BLOCK_WRITE_THRESHOLD-arg"});
  ctx.service<WriteThresholdEventBridge>();
}

}  // namespace strata::qmp
