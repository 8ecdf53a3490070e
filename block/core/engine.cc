#include "strata/engine.h"

#include "base/log.h"
#include "block/core/graph.h"
#include "jobs/job_registry.h"

namespace strata {

Engine::Engine(EngineOptions options)
    : loop_(std::make_unique<Loop>(options.threadpool_size)),
      logger_(std::make_unique<Logger>()),
      graph_(std::make_unique<Graph>(*this)),
      jobs_(std::make_unique<JobRegistry>(*this)) {
  loop_->set_max_inline_write(options.max_inline_write);
}

Engine::Engine(uv_loop_s* host_loop, EngineOptions options)
    : loop_(std::make_unique<Loop>(host_loop)),
      logger_(std::make_unique<Logger>()),
      graph_(std::make_unique<Graph>(*this)),
      jobs_(std::make_unique<JobRegistry>(*this)) {
  loop_->set_max_inline_write(options.max_inline_write);
}

Engine::~Engine() {
  jobs_.reset();
  graph_.reset();
  logger_.reset();
  loop_.reset();
}

Task<void> Engine::co_close_all() { co_await graph_->co_close_all(); }

}  // namespace strata
