// Server: QMP monitors on Unix and TCP sockets. Each accepted connection is
// a monitor: it gets the greeting, negotiates capabilities, and has its
// requests answered in order; events reach every negotiated monitor.
//
// Contract: any number of listeners and of simultaneous connections per
// listener. Input is framed by JsonStreamReader (bounded; bad input gets an
// error reply and the connection goes on). Output queued for a client that
// does not read is bounded too: past `max_pending_output` the connection is
// closed. A client that disconnects while its command runs does not
// disturb it: the command finishes, its reply is dropped. co_close() stops
// listening, closes every connection and returns once no monitor task and
// no write is left; the Server may then be destroyed. A server that is
// holding() accepts connections but greets none until release(), as a
// daemon still applying its command line does not answer yet.
// Thread rules: loop-thread only.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/net.h"
#include "base/sync.h"
#include "qmp/dispatcher.h"
#include "qmp/json_stream.h"

namespace strata::qmp {

class QmpContext;

struct ServerLimits {
  JsonLimits input;
  size_t max_pending_output = 64 << 20;
};

class Server {
 public:
  explicit Server(QmpContext& ctx, ServerLimits limits = {});
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  Result<void> listen_unix(const std::string& path);
  // Returns the bound port (useful with port 0).
  Result<uint16_t> listen_tcp(const std::string& host, uint16_t port);

  // Sends an event to every negotiated monitor.
  void broadcast_event(const std::string& name, const nlohmann::json& data);

  // While held, accepted connections wait (ungreeted) for release().
  void hold() { holding_ = true; }
  void release();
  bool holding() const { return holding_; }

  Task<void> co_close();
  size_t connection_count() const { return connections_.size(); }

 private:
  struct Connection {
    std::unique_ptr<Stream> stream;
    Session session;
    JsonStreamReader reader;
    size_t pending_output = 0;
    explicit Connection(std::unique_ptr<Stream> s, JsonLimits limits)
        : stream(std::move(s)), reader(limits) {}
  };

  void on_accept(std::unique_ptr<Stream> stream);
  void send(const std::shared_ptr<Connection>& conn, const nlohmann::json& message);
  static Task<void> co_serve(Server* server, std::shared_ptr<Connection> conn);
  static Task<void> co_send(Server* server, std::shared_ptr<Connection> conn, std::string text);
  void task_done();

  QmpContext& ctx_;
  ServerLimits limits_;
  std::vector<std::unique_ptr<Listener>> listeners_;
  std::list<std::shared_ptr<Connection>> connections_;
  std::vector<std::shared_ptr<Connection>> held_;  // accepted while holding
  bool holding_ = false;
  size_t active_tasks_ = 0;
  CoQueue idle_;
  bool closing_ = false;
};

}  // namespace strata::qmp
