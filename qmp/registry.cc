// Command, event and action declarations; the schema they generate.
#include "qmp/registry.h"

#include "qmp/context.h"

namespace strata::qmp {

namespace {
constexpr const char* kEmpty = "q_empty";
}  // namespace

CommandRegistry::CommandRegistry() {
  schema_.add_object(kEmpty, {});
  schema_.add_enum("ActionCompletionMode", {"individual", "grouped"});
  schema_.add_object("TransactionProperties", {{"completion-mode", "ActionCompletionMode", true}});
  refresh_transaction_type();
}

void CommandRegistry::add(CommandSpec spec) {
  if (auto it = index_.find(spec.name); it != index_.end()) {
    commands_[it->second] = std::move(spec);
    return;
  }
  index_[spec.name] = commands_.size();
  commands_.push_back(std::move(spec));
}

const CommandSpec* CommandRegistry::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &commands_[it->second];
}

std::vector<std::string> CommandRegistry::names() const {
  std::vector<std::string> out;
  for (const auto& c : commands_) out.push_back(c.name);
  return out;
}

void CommandRegistry::add_event(EventSpec spec) {
  events_.push_back(std::move(spec));
}

void CommandRegistry::add_action(ActionSpec spec) {
  for (auto& a : actions_) {
    if (a.type == spec.type) {
      a = std::move(spec);
      refresh_transaction_type();
      return;
    }
  }
  actions_.push_back(std::move(spec));
  refresh_transaction_type();
}

const ActionSpec* CommandRegistry::find_action(const std::string& type) const {
  for (const auto& a : actions_) {
    if (a.type == type) return &a;
  }
  return nullptr;
}

void CommandRegistry::refresh_transaction_type() {
  std::vector<std::string> kinds;
  std::vector<Variant> variants;
  for (const auto& a : actions_) {
    kinds.push_back(a.type);
    std::string wrapper = "q_obj_" + a.type + "-wrapper";
    schema_.add_object(wrapper, {{"data", a.data_type}});
    variants.push_back({a.type, wrapper});
  }
  schema_.add_enum("TransactionActionKind", kinds);
  schema_.add_object("TransactionAction", {{"type", "TransactionActionKind"}}, "type", variants);
}

Result<void> CommandRegistry::validate_arguments(const CommandSpec& command, json& args) const {
  if (!command.boxed.empty()) return schema_.validate(command.boxed, args, "");
  return schema_.validate_members(command.args, args, "");
}

json CommandRegistry::introspect() const {
  // Inline arguments need a named type; build them in a copy of the schema.
  Schema schema = schema_;
  Schema::Introspector out(schema);
  for (const auto& c : commands_) {
    std::string arg_type = c.boxed;
    if (arg_type.empty()) {
      arg_type = c.args.empty() ? kEmpty : "q_obj_" + c.name + "-arg";
      if (!c.args.empty()) schema.add_object(arg_type, c.args);
    }
    out.add_command(c.name, arg_type, c.returns.empty() ? kEmpty : c.returns);
  }
  for (const auto& e : events_) out.add_event(e.name, e.data_type.empty() ? kEmpty : e.data_type);
  return out.finish();
}

// QmpContext.

QmpContext::QmpContext(Engine& engine) : engine_(engine), command_lock_(engine.loop()) {
  register_all_commands(*this);
}

QmpContext::~QmpContext() {
  while (!services_.empty()) services_.pop_back();
}

void QmpContext::emit_event(const std::string& name, const nlohmann::json& data) {
  if (event_sink_) event_sink_(name, data);
}

Task<void> QmpContext::co_run_shutdown_hooks() {
  auto hooks = std::move(shutdown_hooks_);
  shutdown_hooks_.clear();
  for (auto& hook : hooks) co_await hook();
}

void QmpContext::request_shutdown() {
  shutdown_requested_ = true;
  if (shutdown_handler_) shutdown_handler_();
}

}  // namespace strata::qmp
