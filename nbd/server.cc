#include "nbd/server.h"

#include <algorithm>

#include "base/log.h"
#include "nbd/bitmaps.h"
#include "nbd/channel.h"

namespace strata::nbd {

namespace {
constexpr size_t kMaxWaitingClients = 128;
// Socket send buffer per client (the kernel doubles it for its bookkeeping):
// room for several 256 KiB READ replies, so a reply usually goes out in one
// writev while the client is still reading the one before.
constexpr size_t kSendBufferBytes = 1u << 20;
}  // namespace

Server::Server(Engine& engine, ServerOptions options)
    : engine_(engine),
      options_(std::move(options)),
      shared_(engine.loop(), options_.max_buffer_bytes, options_.buffer_floor_bytes,
              options_.cached_buffer_bytes),
      connections_idle_(engine.loop()),
      export_gone_(engine.loop()),
      removals_(engine.loop()) {
  if (!options_.bitmap_resolver) options_.bitmap_resolver = resolve_dirty_bitmap;
}

Server::~Server() {
  if (!connections_.empty()) {
    engine_.logger().error("NBD server destroyed with clients connected; call co_stop() first");
  }
}

Result<void> Server::listen_unix(const std::string& path) {
  ignore_sigpipe_by_default();
  auto l = Listener::listen_unix(engine_.loop(), path,
                                 [this](std::unique_ptr<Stream> s) { accept(std::move(s)); });
  if (!l) return std::move(l).error();
  listeners_.push_back(std::move(*l));
  return {};
}

Result<uint16_t> Server::listen_tcp(const std::string& host, uint16_t port) {
  ignore_sigpipe_by_default();
  auto l = Listener::listen_tcp(engine_.loop(), host, port,
                                [this](std::unique_ptr<Stream> s) { accept(std::move(s)); });
  if (!l) return std::move(l).error();
  uint16_t bound = (*l)->port();
  listeners_.push_back(std::move(*l));
  return bound;
}

void Server::accept(std::unique_ptr<Stream> stream) {
  if (stopping_) return;
  bool full = options_.max_connections != 0 && connections_.size() >= options_.max_connections;
  if (!full) {
    start(std::move(stream));
  } else if (waiting_.size() < kMaxWaitingClients) {
    waiting_.push_back(std::move(stream));
  }
}

void Server::start(std::unique_ptr<Stream> stream) {
  stream->set_send_buffer(kSendBufferBytes);
  std::string peer = stream->peer_name();
  auto channel = std::make_unique<PlainChannel>(std::move(stream));
  connections_.push_back(std::make_unique<Connection>(engine_.loop(), *this, std::move(channel),
                                                      options_.limits, peer, shared_));
  engine_.loop().spawn(co_serve(connections_.back().get()));
}

Task<void> Server::co_serve(Connection* conn) {
  co_await conn->co_run();
  connections_.remove_if([conn](const auto& c) { return c.get() == conn; });
  if (!stopping_ && !waiting_.empty()) {
    auto next = std::move(waiting_.front());
    waiting_.pop_front();
    start(std::move(next));
  }
  connections_idle_.wake_all();
  if (on_client_closed_) on_client_closed_();
}

Result<Export*> Server::add_export(ExportOptions options) {
  if (stopping_) return Error{ESHUTDOWN, "NBD server is stopping"};
  std::string id = options.id.empty() ? options.name : options.id;
  if (export_by_id(id)) return Error{EEXIST, "Block export id '" + id + "' is already in use"};
  for (const auto& e : exports_) {
    if (e->name() == options.name) {
      return Error{EEXIST, "NBD server already has export named '" + options.name + "'"};
    }
  }
  auto exp = Export::create(engine_.graph(), std::move(options), options_.bitmap_resolver);
  if (!exp) return std::move(exp).error();
  exports_.push_back(std::move(*exp));
  return exports_.back().get();
}

Export* Server::export_by_id(const std::string& id) const {
  for (const auto& e : exports_) {
    if (e->id() == id) return e.get();
  }
  return nullptr;
}

std::vector<Export*> Server::exports() const {
  std::vector<Export*> out;
  for (const auto& e : exports_) out.push_back(e.get());
  return out;
}

Export* Server::find_export(const std::string& name) {
  for (const auto& e : exports_) {
    if (!e->closing() && e->name() == name) return e.get();
  }
  return nullptr;
}

std::vector<Export*> Server::list_exports() {
  std::vector<Export*> out;
  for (const auto& e : exports_) {
    if (!e->closing()) out.push_back(e.get());
  }
  return out;
}

bool Server::has_export(const Export* exp) const {
  return std::any_of(exports_.begin(), exports_.end(),
                     [exp](const auto& e) { return e.get() == exp; });
}

void Server::forget_export(Export* exp) {
  std::string id = exp->id();
  auto it = std::find_if(exports_.begin(), exports_.end(),
                         [exp](const auto& e) { return e.get() == exp; });
  if (it == exports_.end()) return;
  exports_.erase(it);
  export_gone_.wake_all();
  if (on_export_deleted_) on_export_deleted_(id);
}

Result<void> Server::begin_remove_export(const std::string& id, RemoveMode mode) {
  Export* exp = export_by_id(id);
  if (!exp) return Error{ENOENT, "Export '" + id + "' is not found"};
  if (exp->closing()) return Error{EBUSY, "Export '" + id + "' is already shutting down"};
  if (mode == RemoveMode::kSafe && exp->client_count() > 0) {
    return Error{EBUSY, "export '" + id + "' still in use"};
  }
  exp->begin_close();
  removals_.spawn(co_finish_removal(exp));
  return {};
}

Task<void> Server::co_finish_removal(Export* exp) {
  (void)co_await exp->co_close(RemoveMode::kHard);
  forget_export(exp);
}

Task<Result<void>> Server::co_remove_export(std::string id, RemoveMode mode) {
  Export* exp = export_by_id(id);
  STRATA_CO_TRY(begin_remove_export(id, mode));
  while (has_export(exp)) co_await export_gone_.wait();
  co_return Result<void>{};
}

Task<void> Server::co_stop() {
  stopping_ = true;
  for (auto& l : listeners_) l->close();
  listeners_.clear();
  waiting_.clear();
  for (auto& c : connections_) c->disconnect();
  for (Export* exp : exports()) {
    if (!exp->closing()) (void)begin_remove_export(exp->id(), RemoveMode::kHard);
  }
  while (!connections_.empty()) co_await connections_idle_.wait();
  co_await removals_.co_join();
}

}  // namespace strata::nbd
