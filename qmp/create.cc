// blockdev-create and x-blockdev-amend: checks made before the job exists,
// then a CreateJob / AmendJob (jobs/) is registered and started. Errors of
// the work itself end the job and show in query-jobs, as in QEMU.
#include "block/core/graph.h"
#include "jobs/amend_job.h"
#include "jobs/create_job.h"
#include "jobs/job_registry.h"
#include "qmp/block_lookup.h"
#include "qmp/commands.h"
#include "qmp/context.h"

namespace strata::qmp {

namespace {

Task<Result<json>> co_blockdev_create(QmpContext& ctx, json args) {
  Engine& engine = ctx.engine();
  auto job = std::make_shared<CreateJob>(engine, args["job-id"].get<std::string>(),
                                         std::move(args["options"]));
  STRATA_CO_TRY(engine.jobs().add(job));
  job->start();
  co_return json::object();
}

// QEMU's qmp_x_blockdev_amend(): node, driver, then the job id.
Task<Result<json>> co_x_blockdev_amend(QmpContext& ctx, json args) {
  Engine& engine = ctx.engine();
  STRATA_CO_TRY_ASSIGN(Node * node,
                       lookup_bs(engine.graph(), "", args["node-name"].get<std::string>()));
  json& options = args["options"];
  if (options["driver"].get<std::string>() != node->driver_name()) {
    co_return Error{EINVAL, "x-blockdev-amend doesn't support changing the block driver"};
  }
  if (node->driver_name() != "qcow2") {
    co_return Error{ENOTSUP, "Driver does not support x-blockdev-amend"};
  }
  auto job = std::make_shared<AmendJob>(engine, args["job-id"].get<std::string>(), *node,
                                        std::move(options), args.value("force", false));
  STRATA_CO_TRY(engine.jobs().add(job));
  job->start();
  co_return json::object();
}

void add_amend_types(Schema& s) {
  s.add_enum("QCryptoBlockFormat", {"qcow", "luks"});
  s.add_enum("QCryptoBlockLUKSKeyslotState", {"active", "inactive"});
  s.add_object("QCryptoBlockAmendOptionsLUKS", {{"state", "QCryptoBlockLUKSKeyslotState"},
                                                {"new-secret", "str", true},
                                                {"old-secret", "str", true},
                                                {"keyslot", "int", true},
                                                {"iter-time", "int", true},
                                                {"secret", "str", true}});
  s.add_object("QCryptoBlockAmendOptions", {{"format", "QCryptoBlockFormat"}}, "format",
               {{"luks", "QCryptoBlockAmendOptionsLUKS"}});
  s.add_object("BlockdevAmendOptionsQcow2", {{"encrypt", "QCryptoBlockAmendOptions", true}});
  s.add_object("BlockdevAmendOptions", {{"driver", "BlockdevDriver"}}, "driver",
               {{"qcow2", "BlockdevAmendOptionsQcow2"}});
}

}  // namespace

void register_create_command(QmpContext& ctx) {
  CommandRegistry& r = ctx.registry();
  add_amend_types(r.schema());
  r.add({.name = "blockdev-create",
         .args = {{"job-id", "str"}, {"options", "BlockdevCreateOptions"}},
         .handler = co_blockdev_create});
  r.add({.name = "x-blockdev-amend",
         .args = {{"job-id", "str"},
                  {"node-name", "str"},
                  {"options", "BlockdevAmendOptions"},
                  {"force", "bool", true}},
         .handler = co_x_blockdev_amend});
}

}  // namespace strata::qmp
