// Monitor connections: greeting, read loop, ordered replies, events.
#include "qmp/server.h"

#include <array>

#include "base/log.h"
#include "qmp/context.h"

namespace strata::qmp {

using nlohmann::json;

namespace {
constexpr size_t kReadBytes = 4096;
}  // namespace

Server::Server(QmpContext& ctx, ServerLimits limits)
    : ctx_(ctx), limits_(limits), idle_(ctx.engine().loop()) {}

Server::~Server() {
  for (auto& c : connections_) c->stream->close();
}

Result<void> Server::listen_unix(const std::string& path) {
  auto l = Listener::listen_unix(ctx_.engine().loop(), path,
                                 [this](std::unique_ptr<Stream> s) { on_accept(std::move(s)); });
  if (!l) return std::move(l).error();
  listeners_.push_back(std::move(*l));
  return {};
}

Result<uint16_t> Server::listen_tcp(const std::string& host, uint16_t port) {
  auto l = Listener::listen_tcp(ctx_.engine().loop(), host, port,
                                [this](std::unique_ptr<Stream> s) { on_accept(std::move(s)); });
  if (!l) return std::move(l).error();
  uint16_t bound = (*l)->port();
  listeners_.push_back(std::move(*l));
  return bound;
}

void Server::on_accept(std::unique_ptr<Stream> stream) {
  if (closing_) return;
  auto conn = std::make_shared<Connection>(std::move(stream), limits_.input);
  connections_.push_back(conn);
  if (holding_) {
    held_.push_back(std::move(conn));
    return;
  }
  active_tasks_++;
  ctx_.engine().loop().spawn(co_serve(this, conn));
}

void Server::release() {
  holding_ = false;
  for (auto& conn : std::exchange(held_, {})) {
    if (closing_) break;
    active_tasks_++;
    ctx_.engine().loop().spawn(co_serve(this, std::move(conn)));
  }
}

void Server::task_done() {
  if (--active_tasks_ == 0) idle_.wake_all();
}

void Server::send(const std::shared_ptr<Connection>& conn, const json& message) {
  if (conn->stream->closed()) return;
  std::string text = to_qmp_text(message) + "\r\n";
  conn->pending_output += text.size();
  if (conn->pending_output > limits_.max_pending_output) {
    ctx_.engine().logger().warning("QMP client " + conn->stream->peer_name() +
                                   " does not read its replies; closing the connection");
    conn->stream->abort();
    return;
  }
  active_tasks_++;
  // Starts at once, so writes are submitted in call order.
  ctx_.engine().loop().spawn(co_send(this, conn, std::move(text)));
}

Task<void> Server::co_send(Server* server, std::shared_ptr<Connection> conn, std::string text) {
  size_t size = text.size();
  auto r = co_await conn->stream->co_write(
      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), size));
  conn->pending_output -= size;
  if (!r) conn->stream->close();
  server->task_done();
}

Task<void> Server::co_serve(Server* server, std::shared_ptr<Connection> conn) {
  server->send(conn, greeting());
  // Requests are small; a monitor costs this, its stream (which keeps no
  // receive buffer while idle) and its reader's partial request.
  std::vector<uint8_t> buf(kReadBytes);
  std::vector<JsonMessage> messages;
  while (!conn->stream->closed()) {
    auto n = co_await conn->stream->co_read_some(buf);
    if (!n || *n == 0) break;
    messages.clear();
    conn->reader.feed(std::string_view(reinterpret_cast<const char*>(buf.data()), *n), &messages);
    for (auto& m : messages) {
      json response = co_await co_dispatch(server->ctx_, conn->session, std::move(m));
      if (conn->stream->closed()) break;
      server->send(conn, response);
    }
  }
  conn->stream->close();
  server->connections_.remove(conn);
  server->task_done();
}

void Server::broadcast_event(const std::string& name, const json& data) {
  json event = make_event(name, data);
  for (auto& c : connections_) {
    if (c->session.negotiated) send(c, event);
  }
}

Task<void> Server::co_close() {
  closing_ = true;
  for (auto& l : listeners_) l->close();
  listeners_.clear();
  // A client that reads nothing does not hold up the shutdown.
  for (auto& c : connections_) c->stream->abort();
  held_.clear();
  while (active_tasks_ != 0) co_await idle_.wait();
}

}  // namespace strata::qmp
