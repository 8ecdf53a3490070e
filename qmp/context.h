// QmpContext: what a QMP command handler can reach: the Engine, the command
// registry, the event sink, shutdown, and per-area service objects.
//
// Contract: one QmpContext per QMP server (normally per stratad); it lives
// longer than every monitor and every running command. Events go to every
// monitor that finished capabilities negotiation, with QEMU's timestamp.
// service<T>() returns the area's state object of type T, creating it on
// first use with T(QmpContext&); services are destroyed with the context, in
// reverse order of creation. command_lock() serialises command execution
// across monitors.
// Thread rules: loop-thread only.
#pragma once

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <typeindex>
#include <utility>
#include <vector>

#include "base/sync.h"
#include "qmp/registry.h"
#include "strata/engine.h"

namespace strata::qmp {

using EventSink = std::function<void(const std::string& name, const nlohmann::json& data)>;

class QmpContext {
 public:
  explicit QmpContext(Engine& engine);
  ~QmpContext();
  QmpContext(const QmpContext&) = delete;
  QmpContext& operator=(const QmpContext&) = delete;

  Engine& engine() const { return engine_; }
  CommandRegistry& registry() { return registry_; }
  CoMutex& command_lock() { return command_lock_; }

  // Emits an event ({"event", "data"?, "timestamp"}); data null: no "data".
  void emit_event(const std::string& name, const nlohmann::json& data = nullptr);
  void set_event_sink(EventSink sink) { event_sink_ = std::move(sink); }

  // `quit`: the owner decides what shutting down means (stratad: stop
  // serving, close the graph, leave the loop).
  void request_shutdown();
  void set_shutdown_handler(std::function<void()> fn) { shutdown_handler_ = std::move(fn); }
  bool shutdown_requested() const { return shutdown_requested_; }

  // Work to do when the daemon shuts down, before the monitors close and
  // the graph is closed (cancel jobs, close exports, emitting their events
  // to the monitors still connected). Hooks run in registration order.
  void add_shutdown_hook(std::function<Task<void>()> hook) {
    shutdown_hooks_.push_back(std::move(hook));
  }
  Task<void> co_run_shutdown_hooks();

  template <typename T>
  T& service() {
    std::type_index key(typeid(T));
    for (auto& s : services_) {
      if (s.key == key) return *static_cast<T*>(s.object.get());
    }
    auto* object = new T(*this);
    services_.push_back(Service{key, std::unique_ptr<void, void (*)(void*)>(
                                         object, [](void* p) { delete static_cast<T*>(p); })});
    return *object;
  }

 private:
  struct Service {
    std::type_index key;
    std::unique_ptr<void, void (*)(void*)> object;
  };

  Engine& engine_;
  CommandRegistry registry_;
  CoMutex command_lock_;
  EventSink event_sink_;
  std::function<void()> shutdown_handler_;
  bool shutdown_requested_ = false;
  std::vector<std::function<Task<void>()>> shutdown_hooks_;
  std::vector<Service> services_;
};

// Registers every command and action Strata implements (qmp/commands.cc);
// called by the constructor.
void register_all_commands(QmpContext& ctx);

}  // namespace strata::qmp
