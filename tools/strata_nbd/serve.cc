#include "strata_nbd/serve.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <thread>

#include "base/fs.h"
#include "base/log.h"
#include "base/pidfile.h"
#include "block/core/filename.h"
#include "block/core/graph.h"
#include "nbd/server.h"
#include "strata/engine.h"

namespace strata::tools::nbd_tool {

namespace {
constexpr const char* kNodeName = "strata-nbd-export";

Task<Result<nlohmann::json>> co_node_options(Engine& engine, const Options& o) {
  auto opened =
      co_await co_filename_options(engine.loop(), engine.graph().drivers(), o.image, o.format);
  if (!opened) {
    co_return Error{opened.error().code,
                    "Failed to blk_new_open '" + o.image + "': " + opened.error().message};
  }
  nlohmann::json opts = std::move(*opened);
  opts["node-name"] = kNodeName;
  opts["read-only"] = o.read_only;
  if (!o.cache.empty()) {
    bool direct = o.cache == "none" || o.cache == "directsync";
    bool no_flush = o.cache == "unsafe";
    if (o.cache != "none" && o.cache != "directsync" && o.cache != "writeback" &&
        o.cache != "writethrough" && o.cache != "unsafe") {
      co_return Error{EINVAL, "Invalid cache mode '" + o.cache + "'"};
    }
    opts["cache"] = {{"direct", direct}, {"no-flush", no_flush}};
  }
  if (!o.discard.empty()) opts["discard"] = o.discard;
  if (!o.detect_zeroes.empty()) opts["detect-zeroes"] = o.detect_zeroes;
  co_return opts;
}

bool truthy(const std::string& v) {
  return v == "on" || v == "yes" || v == "true";
}

Result<std::shared_ptr<nbd::TlsCreds>> load_tls(const Options& o) {
  if (o.tls_creds.empty()) return std::shared_ptr<nbd::TlsCreds>{};
  for (const auto& obj : o.objects) {
    if (obj.props.at("id") != o.tls_creds) continue;
    auto prop = [&](const char* k, const char* d) {
      auto it = obj.props.find(k);
      return it == obj.props.end() ? std::string(d) : it->second;
    };
    if (prop("endpoint", "client") != "server") {
      return Error{EINVAL, "Expecting TLS credentials with a server endpoint"};
    }
    std::string dir = prop("dir", "");
    if (obj.type == "tls-creds-x509") {
      return nbd::TlsCreds::load_x509(dir, truthy(prop("verify-peer", "yes")));
    }
    if (obj.type == "tls-creds-psk") return nbd::TlsCreds::load_psk(dir, prop("username", ""));
    return Error{EINVAL, "Object with id '" + o.tls_creds + "' is not TLS credentials"};
  }
  return Error{ENOENT, "No TLS credentials with id '" + o.tls_creds + "'"};
}

// Tells the waiting parent (--fork) that we serve, and lets go of its
// terminal and pipes.
void detach_from_parent(int ready_fd) {
  char ok = 0;
  (void)!write(ready_fd, &ok, 1);
  close(ready_fd);
  int null_fd = open("/dev/null", O_RDWR);
  if (null_fd >= 0) {
    for (int fd : {0, 1, 2}) dup2(null_fd, fd);
    if (null_fd > 2) close(null_fd);
  }
}

// What the program waits on: a signal, or the last client leaving.
struct StopState {
  explicit StopState(Loop& loop) : stop(loop) {}
  CoEvent stop;
  bool had_client = false;
};

void on_client_closed(const Options* o, nbd::Server* server, StopState* state) {
  state->had_client = true;
  if (!o->persistent && server->connection_count() == 0) state->stop.set();
}

Task<int> co_serve(Engine& engine, const Options& o, int ready_fd, StopState* state) {
  auto tls = load_tls(o);
  if (!tls) {
    std::fprintf(stderr, "strata-nbd: %s\n", tls.error().message.c_str());
    co_return 1;
  }
  auto opts = co_await co_node_options(engine, o);
  if (!opts) {
    std::fprintf(stderr, "strata-nbd: %s\n", opts.error().message.c_str());
    co_return 1;
  }
  auto node = co_await engine.graph().co_add(*opts);
  if (!node) {
    std::fprintf(stderr, "strata-nbd: Failed to blk_new_open '%s': %s\n", o.image.c_str(),
                 node.error().message.c_str());
    co_return 1;
  }
  nbd::ServerOptions so;
  so.max_connections = static_cast<uint32_t>(o.shared);
  so.tls = *tls;
  nbd::Server server(engine, so);
  nbd::ExportOptions eo;
  eo.name = o.export_name;
  eo.description = o.description;
  eo.node_name = kNodeName;
  eo.writable = !o.read_only;
  eo.bitmaps = o.bitmaps;
  eo.allocation_depth = o.allocation_depth;
  eo.multi_conn = o.shared != 1;
  int status = 0;
  auto exp = server.add_export(eo);
  Result<void> listening;
  if (!exp) {
    listening = std::move(exp).error();
  } else if (!o.socket_path.empty()) {
    listening = server.listen_unix(o.socket_path);
  } else {
    auto port = server.listen_tcp(o.bind, o.port);
    if (!port) listening = std::move(port).error();
  }
  if (!listening) {
    std::fprintf(stderr, "strata-nbd: %s\n", listening.error().message.c_str());
    status = 1;
  }
  // Written and locked as qemu-nbd does (base/pidfile.h): a second server
  // given the same file refuses to start.
  PidFile pidfile;
  if (listening && !o.pid_file.empty()) {
    auto written = PidFile::create(o.pid_file);
    if (written) {
      pidfile = std::move(*written);
    } else {
      std::fprintf(stderr, "strata-nbd: %s\n", written.error().message.c_str());
      status = 1;
    }
  }
  if (status == 0) {
    if (ready_fd >= 0) detach_from_parent(ready_fd);
    server.set_on_client_closed([&o, &server, state] { on_client_closed(&o, &server, state); });
    co_await state->stop.co_wait();
  }
  co_await server.co_stop();
  co_await engine.co_close_all();
  pidfile.remove();
  co_return status;
}

// Runs sigwait on a thread so that no signal handler touches the loop.
class SignalWatcher {
 public:
  SignalWatcher(Loop& loop, StopState* state) : loop_(loop), state_(state) {
    thread_ = std::thread([this] { watch(); });
  }
  ~SignalWatcher() {
    done_ = true;
    pthread_kill(thread_.native_handle(), SIGUSR1);
    thread_.join();
  }
  static sigset_t signals() {
    sigset_t set;
    sigemptyset(&set);
    for (int s : {SIGINT, SIGTERM, SIGHUP, SIGUSR1}) sigaddset(&set, s);
    return set;
  }

 private:
  void watch() {
    sigset_t set = signals();
    for (;;) {
      int sig = 0;
      sigwait(&set, &sig);
      if (done_) return;
      if (sig != SIGUSR1) loop_.post([state = state_] { state->stop.set(); });
    }
  }
  Loop& loop_;
  StopState* state_;
  std::atomic<bool> done_{false};
  std::thread thread_;
};

// Forks; the parent waits until the child listens and exits with its verdict.
int daemonize() {
  int fds[2];
  if (pipe(fds) != 0) return -1;
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid > 0) {
    close(fds[1]);
    char ok = 1;
    ssize_t n = read(fds[0], &ok, 1);
    _exit(n == 1 && ok == 0 ? 0 : 1);
  }
  close(fds[0]);
  setsid();
  return fds[1];
}
}  // namespace

int run(const Options& o) {
  int ready_fd = -1;
  if (o.fork) {
    ready_fd = daemonize();
    if (ready_fd < 0) {
      std::perror("strata-nbd: fork");
      return 1;
    }
  }
  sigset_t set = SignalWatcher::signals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);
  fs::raise_open_file_limit();
  Engine engine;
  engine.logger().set_level(o.verbose ? LogLevel::kDebug : LogLevel::kWarning);
  StopState state(engine.loop());
  int status;
  {
    SignalWatcher watcher(engine.loop(), &state);
    status = engine.run(co_serve(engine, o, ready_fd, &state));
  }
  return status;
}

}  // namespace strata::tools::nbd_tool
