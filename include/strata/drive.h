// Drive: an application's handle on a node of the graph, for reading and
// writing from inside the process (what a VMM's virtual disk uses).
//
// Contract: a Drive is a root user of its node: it takes consistent-read
// (and write when writable; resize only while co_resize runs, as a QEMU
// guest device, so block jobs that keep the size fixed can run under it)
// and shares what Options say, so
// another user whose permissions conflict is refused, and so is this Drive
// when someone holds conflicting permissions or image locks. Requests are
// bounds-checked against the node size and wait while the node is drained
// (a graph change in progress). co_close() waits for the requests in
// flight, then detaches; nodes opened only for this Drive are then closed.
// A request after close fails with ENOMEDIUM ("Drive is closed"). Destroying
// a Drive that was not closed does the same in the background.
// Thread rules: loop-thread only. The blocking helpers (read(), write(), ...)
// run the Engine's private loop and must not be used from inside it.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <string>

#include "strata/engine.h"
#include "strata/iovec.h"
#include "strata/result.h"
#include "strata/task.h"

namespace strata {

class Child;
enum class Preallocation;  // block/core/types.h

struct DriveOptions {
  bool writable = true;
  // Let other writers use the node too (QEMU's share-rw=on).
  bool share_rw = false;
  // How the Drive names itself in permission errors.
  std::string user = "drive";
};

// One extent of block status.
struct DriveExtent {
  uint64_t offset = 0;
  uint64_t length = 0;
  bool data = false;       // backed by storage
  bool zero = false;       // reads as zeroes
  bool allocated = false;  // content decided by this node (not a backing file)
};

class Drive {
 public:
  // Opens a graph from blockdev options (node-name optional) and attaches.
  static Task<Result<std::unique_ptr<Drive>>> co_open(Engine& engine, nlohmann::json options,
                                                      DriveOptions drive_options = {});
  // Attaches to a node that already exists.
  static Result<std::unique_ptr<Drive>> attach(Engine& engine, const std::string& node_name,
                                               DriveOptions drive_options = {});
  ~Drive();
  Drive(const Drive&) = delete;
  Drive& operator=(const Drive&) = delete;

  Task<Result<void>> co_read(uint64_t offset, std::span<uint8_t> buf);
  Task<Result<void>> co_readv(uint64_t offset, const IoVec& iov);
  Task<Result<void>> co_write(uint64_t offset, std::span<const uint8_t> buf, bool fua = false);
  Task<Result<void>> co_writev(uint64_t offset, const IoVec& iov, bool fua = false);
  Task<Result<void>> co_write_zeroes(uint64_t offset, uint64_t bytes, bool may_unmap = false);
  Task<Result<void>> co_discard(uint64_t offset, uint64_t bytes);
  Task<Result<void>> co_flush();
  Task<Result<DriveExtent>> co_block_status(uint64_t offset, uint64_t bytes);
  // Takes the resize permission for the call (refused while another user,
  // a stream job say, does not share it).
  Task<Result<void>> co_resize(uint64_t size);
  // The same with QEMU's preallocation of the new area (formats that can).
  Task<Result<void>> co_resize(uint64_t size, Preallocation prealloc);
  Task<void> co_close();

  Result<void> read(uint64_t offset, std::span<uint8_t> buf);
  Result<void> write(uint64_t offset, std::span<const uint8_t> buf, bool fua = false);
  Result<void> write_zeroes(uint64_t offset, uint64_t bytes, bool may_unmap = false);
  Result<void> discard(uint64_t offset, uint64_t bytes);
  Result<void> flush();
  void close();

  // 0 and "" once closed.
  uint64_t size() const;
  const std::string& node_name() const;
  Engine& engine() const { return engine_; }
  // The root edge (for code inside Strata); null once closed.
  Child* edge() const;

 private:
  struct State;   // the edge and the requests in flight, shared with them
  class Request;  // one request, counted in flight while it runs
  Drive(Engine& engine, Child* edge);
  Engine& engine_;
  std::shared_ptr<State> state_;
};

}  // namespace strata
