// Engine: the root object of libstrata. It owns the event loop (or wraps the
// host's), the logger, the block graph and the jobs (jobs/job_registry.h); nothing in Strata is global, so
// several engines can live in one process.
//
// Contract: create the Engine on the thread that will run its loop; destroy
// it there after its work is done (close_all() flushes and closes the
// graph). run() drives a private loop until a task completes; an embedder
// that passes its own uv loop keeps running that loop itself.
// Thread rules: loop-thread only, except Loop::post().
#pragma once

#include <memory>

#include "strata/result.h"
#include "strata/task.h"

struct uv_loop_s;

namespace strata {

class Loop;
class Logger;
class Graph;
class JobRegistry;

struct EngineOptions {
  // Thread pool size for blocking file operations (UV_THREADPOOL_SIZE wins
  // when set in the environment).
  unsigned threadpool_size = 16;
  // Largest write to a memory-backed file (tmpfs) run on the loop thread
  // rather than the pool (Loop::max_inline_write()). Tools that run one
  // copy job raise it; daemons keep the default for short loop stalls.
  size_t max_inline_write = 128 * 1024;
};

class Engine {
 public:
  explicit Engine(EngineOptions options = {});
  // Embeds into a host's libuv loop.
  explicit Engine(uv_loop_s* host_loop, EngineOptions options = {});
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  Loop& loop() const { return *loop_; }
  Logger& logger() const { return *logger_; }
  Graph& graph() const { return *graph_; }
  // Block jobs and their events (listeners get them without QMP).
  JobRegistry& jobs() const { return *jobs_; }

  // Runs the private loop until `task` completes.
  template <typename T>
  T run(Task<T> task);

  // Flushes and closes every node.
  Task<void> co_close_all();

 private:
  std::unique_ptr<Loop> loop_;
  std::unique_ptr<Logger> logger_;
  std::unique_ptr<Graph> graph_;
  std::unique_ptr<JobRegistry> jobs_;
};

}  // namespace strata

#include "base/loop.h"

template <typename T>
T strata::Engine::run(Task<T> task) {
  return loop_->run(std::move(task));
}
