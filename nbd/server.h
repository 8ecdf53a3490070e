// Server: an NBD server of one Engine: listeners (Unix and TCP), exports and
// client connections. This is the API an embedder or the daemon uses.
//
// Contract: exports are added and removed while the server runs; a client
// picks one by name during the handshake. max_connections (0: unlimited)
// bounds the clients served at once; further clients wait, unserved, until
// a slot frees (as in a listen backlog). All clients share one memory budget
// for their request and reply buffers (max_buffer_bytes). With TLS credentials every client
// must STARTTLS first. co_stop() stops listening, disconnects every client,
// removes every export (also those being removed) and returns once all of
// it is finished; the Server
// may then be destroyed (it must be, before its Engine).
// Thread rules: loop-thread only.
#pragma once

#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <vector>

#include "base/net.h"
#include "nbd/connection.h"
#include "nbd/export.h"
#include "nbd/tls.h"
#include "strata/engine.h"

namespace strata::nbd {

struct ServerOptions {
  uint32_t max_connections = 0;
  std::shared_ptr<TlsCreds> tls;
  ConnectionLimits limits;
  // Request and reply buffers all clients may hold at once (nbd/budget.h;
  // 0: no bound); requests past it wait. A client holding nothing may still
  // go on past it with one piece of `buffer_floor_bytes`.
  size_t max_buffer_bytes = MemoryBudget::kDefaultTotal;
  size_t buffer_floor_bytes = MemoryBudget::kDefaultFloor;
  // Idle payload and READ buffers kept for reuse, for all clients.
  size_t cached_buffer_bytes = 32u << 20;
  // Null: the node's dirty bitmaps (nbd/bitmaps.h).
  BitmapResolver bitmap_resolver;
};

class Server final : public HandshakeHost {
 public:
  Server(Engine& engine, ServerOptions options);
  ~Server() override;
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  Result<void> listen_unix(const std::string& path);
  // Returns the bound port (useful with port 0).
  Result<uint16_t> listen_tcp(const std::string& host, uint16_t port);

  Result<Export*> add_export(ExportOptions options);
  // Starts removing export `id` (QEMU's block-export-del): refuses an
  // unknown id, one already shutting down, and in safe mode one with
  // clients; otherwise the export refuses new clients at once, drops its
  // clients and is gone (on_export_deleted) once their requests finished.
  Result<void> begin_remove_export(const std::string& id, RemoveMode mode);
  // begin_remove_export(), then waits until the export is gone.
  Task<Result<void>> co_remove_export(std::string id, RemoveMode mode);
  Export* export_by_id(const std::string& id) const;
  std::vector<Export*> exports() const;

  Task<void> co_stop();
  bool stopping() const { return stopping_; }
  size_t connection_count() const { return connections_.size(); }
  const ServerOptions& options() const { return options_; }

  // Called after a removed export is gone, with its id.
  void set_on_export_deleted(std::function<void(const std::string&)> fn) {
    on_export_deleted_ = std::move(fn);
  }
  // Called after a client connection ended.
  void set_on_client_closed(std::function<void()> fn) { on_client_closed_ = std::move(fn); }

  // HandshakeHost
  Export* find_export(const std::string& name) override;
  std::vector<Export*> list_exports() override;
  std::shared_ptr<TlsCreds> tls_creds() override { return options_.tls; }
  bool shutting_down() override { return stopping_; }

 private:
  void accept(std::unique_ptr<Stream> stream);
  void start(std::unique_ptr<Stream> stream);
  Task<void> co_serve(Connection* conn);
  void forget_export(Export* exp);
  Task<void> co_finish_removal(Export* exp);
  bool has_export(const Export* exp) const;

  Engine& engine_;
  ServerOptions options_;
  SharedResources shared_;
  std::vector<std::unique_ptr<Listener>> listeners_;
  std::vector<std::unique_ptr<Export>> exports_;
  std::list<std::unique_ptr<Connection>> connections_;
  std::deque<std::unique_ptr<Stream>> waiting_;
  CoQueue connections_idle_;
  CoQueue export_gone_;
  TaskGroup removals_;
  bool stopping_ = false;
  std::function<void(const std::string&)> on_export_deleted_;
  std::function<void()> on_client_closed_;
};

}  // namespace strata::nbd
