// block-stream: pulls the data of the layers between a node and a base up
// into the node, then drops those layers from its chain (QEMU's stream job,
// block/stream.c).
//
// Contract: the job puts a copy-on-read filter (block/filters/copy_on_read.h)
// above `bs` with `bottom` set to the lowest layer to copy from (QEMU's
// base_overlay: the layer right above `base`, or `bottom` itself), and
// freezes the chain from the filter down to that layer. It first maps what
// is to copy: a range `bs` allocates is skipped, a range some layer from
// bs's backing file down to base_overlay allocates is marked; ranges only
// `base` (or nothing) has are left alone. The copy engine
// (block/copy/copy_engine.h) then reads the marked ranges through the
// filter, several 512 KiB chunks at once, and the filter writes what it
// does not find in `bs` there, unchanged. Guest I/O goes on through the
// filter meanwhile, and guest writes win (a copy never overwrites what the
// guest wrote: the dispatcher serialises the copy's read and write-back).
// At completion the filter is removed, `bs` is given `base` as its backing
// file in the graph, and the image header names it (`backing_file`, else
// the base's file name, and the base's format ("raw" for a protocol node
// with backing_mask_protocol); no backing file when the
// whole chain was streamed). A cancelled or failed job only removes the
// filter: the chain reads as before, with some data already copied up. A
// read-only `bs` is reopened read-write for the job and back afterwards.
// Errors follow `on_error` (block_job.h) with reads' policy, as QEMU.
// Thread rules: loop-thread only.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "block/copy/copy_engine.h"
#include "jobs/block_job.h"
#include "jobs/copy_listener.h"

namespace strata {

struct StreamParams {
  JobOptions job;
  Node* bs = nullptr;      // the node data is copied into (QEMU's bs)
  Node* base = nullptr;    // layers from here down stay; null: stream everything
  Node* bottom = nullptr;  // instead of base: the lowest layer copied from
  std::string backing_file;
  // QEMU 8.0's backing-mask-protocol: a base that is a protocol node (a
  // `file` node, say) is written as format "raw", not as the protocol.
  bool backing_mask_protocol = false;
  int64_t speed = 0;
  OnError on_error = OnError::kReport;
  std::string filter_node_name;
};

class StreamJob final : public BlockJob, private ChunkCopier {
 public:
  StreamJob(Engine& engine, StreamParams params);
  ~StreamJob() override;

  // Checks what QEMU's stream_start checks, sets the job up and starts it;
  // on failure nothing is left behind (filter gone, bs as it was).
  static Task<Result<std::shared_ptr<StreamJob>>> co_start(Engine& engine, StreamParams params);

  std::string_view type() const override { return "stream"; }
  Task<Result<void>> co_run() override;
  Task<Result<void>> co_prepare() override;
  Task<void> co_clean() override;

 private:
  Result<void> find_layers();
  Task<Result<void>> co_make_writable();
  Task<Result<void>> co_insert_filter();
  Result<void> hold_nodes();
  Task<Result<void>> co_setup();
  // The copy engine's listener: the job's pause points and progress, and
  // stream's error rule (an ignored error drops its chunk and fails the
  // job at the end).
  class Listener final : public JobCopyListener {
   public:
    explicit Listener(StreamJob& job) : JobCopyListener(job), job_(job) {}
    Task<ChunkErrorStep> co_on_error(Error error, bool read_failed) override;

   private:
    StreamJob& job_;
  };

  // How many bytes from `offset` to copy (`copy`) or skip, up to `len`.
  Task<Result<uint64_t>> co_next_range(uint64_t offset, uint64_t len, bool* copy);
  Task<Result<void>> co_find_work(HBitmap& work);
  Task<ChunkOutcome> co_copy(uint64_t offset, uint64_t bytes) override;
  AlignedBuffer take_buffer();
  Task<Result<void>> co_relink();
  Task<void> co_drop_filter();

  StreamParams params_;
  Node* base_overlay_ = nullptr;  // lowest layer copied from
  Node* above_base_ = nullptr;    // the node whose chain link reaches base
  Node* filter_ = nullptr;
  Child* read_edge_ = nullptr;
  bool chain_frozen_ = false;
  bool bs_was_read_only_ = false;
  std::optional<Error> ignored_error_;
  std::vector<AlignedBuffer> buffers_;
};

}  // namespace strata
