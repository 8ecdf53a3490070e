#include "jobs/amend_job.h"

#include "block/core/graph.h"
#include "strata/engine.h"

namespace strata {

AmendJob::AmendJob(Engine& engine, std::string id, Node& node, nlohmann::json options, bool force)
    : Job(engine, JobOptions{.id = std::move(id), .auto_dismiss = false}),
      node_name_(node.name()),
      options_(std::move(options)),
      force_(force) {}

Task<Result<void>> AmendJob::co_run() {
  progress_set_remaining(1);
  Result<void> r;
  if (!engine().graph().find(node_name_)) {
    r = Error{ENODEV, "Node '" + node_name_ + "' went away"};
  } else if (options_.contains("encrypt")) {
    r = Error{ENOTSUP, "image is not encrypted, can't amend"};
  }
  progress_update(1);
  co_return r;
}

}  // namespace strata
