// The protocol commands (qmp_capabilities, query-version, query-commands,
// query-qmp-schema, quit) and the list of every area's registrations.
#include "qmp/commands.h"

#include "qmp/commands_bitmap.h"
#include "qmp/commands_job.h"
#include "qmp/commands_nbd.h"
#include "qmp/commands_write_threshold.h"
#include "qmp/context.h"
#include "qmp/dispatcher.h"
#include "qmp/objects.h"
#include "qmp/transaction.h"

namespace strata::qmp {

namespace {

Task<Result<json>> co_unused_capabilities(QmpContext&, json) {
  // Answered by the dispatcher, which owns the monitor's session state.
  co_return json::object();
}

Task<Result<json>> co_query_version(QmpContext&, json) {
  co_return version_info();
}

Task<Result<json>> co_query_commands(QmpContext& ctx, json) {
  json out = json::array();
  for (const auto& name : ctx.registry().names()) out.push_back({{"name", name}});
  co_return out;
}

Task<Result<json>> co_query_qmp_schema(QmpContext& ctx, json) {
  co_return ctx.registry().introspect();
}

Task<Result<json>> co_quit(QmpContext& ctx, json) {
  ctx.request_shutdown();
  co_return json::object();
}

void register_protocol_commands(CommandRegistry& r) {
  Schema& s = r.schema();
  s.add_enum("QMPCapability", {"oob"});
  s.add_object("VersionTriple", {{"major", "int"}, {"minor", "int"}, {"micro", "int"}});
  s.add_object("VersionInfo", {{"qemu", "VersionTriple"}, {"package", "str"}});
  s.add_object("CommandInfo", {{"name", "str"}});
  s.add_enum("SchemaMetaType",
             {"builtin", "enum", "array", "object", "alternate", "command", "event"});
  s.add_object("SchemaInfo", {{"name", "str"}, {"meta-type", "SchemaMetaType"}});
  r.add({.name = "qmp_capabilities",
         .args = {{"enable", "[QMPCapability]", true}},
         .handler = co_unused_capabilities});
  r.add({.name = "query-version", .returns = "VersionInfo", .handler = co_query_version});
  r.add({.name = "query-commands", .returns = "[CommandInfo]", .handler = co_query_commands});
  r.add({.name = "query-qmp-schema", .returns = "[SchemaInfo]", .handler = co_query_qmp_schema});
  r.add({.name = "quit", .handler = co_quit});
}

}  // namespace

void register_all_commands(QmpContext& ctx) {
  register_protocol_commands(ctx.registry());
  register_transaction_command(ctx.registry());
  register_block_commands(ctx);
  register_snapshot_commands(ctx.registry());
  register_image_commands(ctx.registry());
  register_object_commands(ctx);
  register_bitmap_commands(ctx);
  register_nbd_commands(ctx);
  register_job_commands(ctx);
  register_block_job_commands(ctx);
  register_mirror_commands(ctx);
  register_backup_commands(ctx);
  register_write_threshold_commands(ctx);
}

}  // namespace strata::qmp
