// Export: one node served over NBD under a name.
//
// Contract: an Export is a root user of its node (`NBD export 'name'`): from
// create() on it takes consistent-read, plus write when writable (so the
// image's write lock is held before any client writes, and the node cannot
// be reopened read-only), and shares everything but resize (the export's
// size is fixed while clients use it), as QEMU's NBD exports do. It follows
// Graph::co_replace_node like any parent. Clients register while
// they use the export; co_close() in safe mode refuses while any is
// registered, in hard mode disconnects them, then waits until all have left
// and detaches from the node. Their requests that a filter below holds
// back (throttle) are let go at once by a drain of the exported subtree,
// so a close never waits for I/O limits. After close starts, new clients
// are refused.
// Thread rules: loop-thread only.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "base/sync.h"
#include "block/core/graph.h"
#include "nbd/extents.h"
#include "nbd/meta_context.h"

namespace strata::nbd {

struct ExportOptions {
  std::string id;    // block-export id; defaults to the name
  std::string name;  // NBD export name ("" is the default export)
  std::string description;
  std::string node_name;
  bool writable = false;
  bool writethrough = false;  // every write is FUA
  std::vector<std::string> bitmaps;
  // Per bitmap (when not empty): the node to look for it in, instead of the
  // exported node and its chain (block-export-add's {node, name} form).
  std::vector<std::string> bitmap_nodes;
  bool allocation_depth = false;
  // Advertise CAN_MULTI_CONN. Safe whenever set (one node, one cache for all
  // clients); qemu-nbd advertises it only when it allows several clients.
  bool multi_conn = true;
};

// Finds a dirty bitmap `name` for `node` (the node, then down its
// backing/filter chain) and marks it busy for as long as the view lives.
using BitmapResolver = std::function<Result<std::unique_ptr<BitmapView>>(
    Node& node, const std::string& name, bool writable_export)>;

// A connection using an export; the export can force it off.
class ExportClient {
 public:
  virtual ~ExportClient() = default;
  virtual void disconnect() = 0;
};

enum class RemoveMode { kSafe, kHard };

class Export {
 public:
  static Result<std::unique_ptr<Export>> create(Graph& graph, ExportOptions options,
                                                const BitmapResolver& resolver);
  ~Export();
  Export(const Export&) = delete;
  Export& operator=(const Export&) = delete;

  const ExportOptions& options() const { return options_; }
  const std::string& name() const { return options_.name; }
  const std::string& id() const { return options_.id; }
  bool writable() const { return options_.writable; }
  Child* root() const { return root_; }
  Node* node() const { return root_ ? root_->node() : nullptr; }
  uint64_t size() const { return node() ? node()->size() : 0; }
  // Transmission flags for a client with the given negotiated features.
  uint16_t transmission_flags(bool structured, bool extended, bool contexts) const;
  // Smallest request alignment the node needs (the minimum block size).
  uint32_t min_block_size() const;
  const ContextCatalog& catalog() const { return catalog_; }
  const BitmapView& bitmap(size_t index) const { return *bitmaps_[index]; }

  // A range last seen holding data. Sparse reads inside it skip the block
  // status lookup (which can cost a scan of the file in the kernel). Saying
  // "data" is always safe for a read: the bytes are read either way; only
  // the hole answer could go stale, and holes are never remembered.
  bool known_data(uint64_t offset, uint64_t length) const {
    return offset >= data_start_ && offset + length <= data_end_;
  }
  void note_data(uint64_t offset, uint64_t length) {
    data_start_ = offset;
    data_end_ = offset + length;
  }
  void forget_data() { data_start_ = data_end_ = 0; }

  bool closing() const { return closing_; }
  // Registers a client; false once the export is closing.
  bool attach_client(ExportClient* client);
  void detach_client(ExportClient* client);
  size_t client_count() const { return clients_.size(); }

  // Removes the export; see the class comment.
  Task<Result<void>> co_close(RemoveMode mode);
  // Starts closing without waiting (hard): refuse new clients, disconnect.
  void begin_close();

 private:
  Export(Graph& graph, ExportOptions options);
  Task<void> co_release_held_requests();
  Graph& graph_;
  ExportOptions options_;
  Child* root_ = nullptr;
  ContextCatalog catalog_;
  std::vector<std::unique_ptr<BitmapView>> bitmaps_;
  std::set<ExportClient*> clients_;
  CoQueue clients_gone_;
  bool closing_ = false;
  bool closed_ = false;
  uint64_t data_start_ = 0;
  uint64_t data_end_ = 0;
};

}  // namespace strata::nbd
