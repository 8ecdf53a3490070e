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
#include "qmp/block_schema.h"
#include "strata/engine.h"
#include "strata_nbd/authz.h"

namespace strata::tools::nbd_tool {

namespace {
constexpr const char* kNodeName = "strata-nbd-export";

// The node to export: the image file and format (probed when omitted, as
// QEMU names files: block/core/filename.h), or the options --image-opts
// gives, with the command line's settings on top. Errors are those QEMU
// gives as "Failed to blk_new_open" (the caller adds the prefix).
Task<Result<nlohmann::json>> co_node_options(Engine& engine, const Options& o) {
  nlohmann::json opts;
  if (o.image_opts) {
    STRATA_CO_TRY_ASSIGN(opts, co_await qmp::co_parse_image_options(engine, o.image));
  } else {
    STRATA_CO_TRY_ASSIGN(opts, co_await co_filename_options(engine.loop(), engine.graph().drivers(),
                                                            o.image, o.format));
  }
  opts["node-name"] = kNodeName;
  opts["read-only"] = o.read_only;
  bool direct = o.cache == "none" || o.cache == "directsync";
  if (!o.cache.empty()) opts["cache"] = {{"direct", direct}, {"no-flush", o.cache == "unsafe"}};
  // --aio reaches the file node, which picks its engine from it
  // (docs/drivers/file.md); native needs O_DIRECT, as in QEMU.
  if (!o.aio.empty()) {
    if (o.aio == "native" && !direct) {
      co_return Error{EINVAL,
                      "aio=native was specified, but it requires cache.direct=on, which was not "
                      "specified."};
    }
    if (opts.contains("file") && opts["file"].is_object()) opts["file"]["aio"] = o.aio;
  }
  if (!o.discard.empty()) opts["discard"] = o.discard;
  if (!o.detect_zeroes.empty()) opts["detect-zeroes"] = o.detect_zeroes;
  co_return opts;
}

bool truthy(const std::string& v) {
  return v == "on" || v == "yes" || v == "true";
}

Result<std::shared_ptr<nbd::TlsCreds>> load_creds(const Options& o);

// The credentials, with the --tls-authz check installed.
Result<std::shared_ptr<nbd::TlsCreds>> load_tls(const Options& o) {
  for (const auto& obj : o.objects) {
    if (is_authz_type(obj.type)) STRATA_TRY(check_authz_object(obj));
  }
  STRATA_TRY_ASSIGN(auto creds, load_creds(o));
  if (creds && !o.tls_authz.empty()) {
    STRATA_TRY_ASSIGN(auto authorizer, make_authorizer(o.objects, o.tls_authz));
    creds->set_authorizer(std::move(authorizer));
  }
  return creds;
}

Result<std::shared_ptr<nbd::TlsCreds>> load_creds(const Options& o) {
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

void on_client_closed(Engine& engine, const Options* o, nbd::Server* server, StopState* state) {
  state->had_client = true;
  engine.logger().debug("client disconnected, " + std::to_string(server->connection_count()) +
                        " left");
  if (!o->persistent && server->connection_count() == 0) state->stop.set();
}

Task<int> co_serve(Engine& engine, const Options& o, int ready_fd, StopState* state) {
  auto tls = load_tls(o);
  if (!tls) {
    std::fprintf(stderr, "strata-nbd: %s\n", tls.error().message.c_str());
    co_return 1;
  }
  auto opts = co_await co_node_options(engine, o);
  Result<Node*> node = Error{};
  if (opts) {
    node = co_await engine.graph().co_add(*opts);
  } else {
    node = opts.error();
  }
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
    engine.logger().debug(
        "serving '" + o.image + "' on " +
        (o.socket_path.empty() ? o.bind + ":" + std::to_string(o.port) : o.socket_path));
    server.set_on_client_closed(
        [&engine, &o, &server, state] { on_client_closed(engine, &o, &server, state); });
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

// -T [enable=]PATTERN[,events=FILE][,file=FILE]: QEMU's trace options.
// Strata has no trace events; any pattern turns on its debug log, which
// file=FILE writes to that file (docs/tools/strata-nbd.md).
Result<void> apply_trace(Logger& logger, const std::string& spec) {
  std::string file;
  size_t pos = 0;
  while (pos <= spec.size()) {
    size_t comma = spec.find(',', pos);
    std::string item =
        spec.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    pos = comma == std::string::npos ? spec.size() + 1 : comma + 1;
    size_t eq = item.find('=');
    std::string key = eq == std::string::npos ? "enable" : item.substr(0, eq);
    std::string value = eq == std::string::npos ? item : item.substr(eq + 1);
    if (key == "file") {
      file = value;
    } else if (key == "events") {
      if (!std::ifstream(value))
        return Error{ENOENT, "error: could not open trace events file '" + value + "'"};
    } else if (key != "enable") {
      return Error{EINVAL, "Invalid parameter '" + key + "'"};
    }
  }
  logger.set_level(LogLevel::kDebug);
  if (!file.empty()) {
    auto out = std::shared_ptr<FILE>(std::fopen(file.c_str(), "a"), [](FILE* f) {
      if (f) std::fclose(f);
    });
    if (!out)
      return Error{errno, "Failed to open trace file '" + file + "': " + std::strerror(errno)};
    logger.set_sink([out](LogLevel level, std::string_view m) {
      std::fprintf(out.get(), "strata: %s: %.*s\n", Logger::name(level), int(m.size()), m.data());
      std::fflush(out.get());
    });
  }
  return {};
}

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
  if (!o.trace.empty()) {
    auto traced = apply_trace(engine.logger(), o.trace);
    if (!traced) {
      std::fprintf(stderr, "strata-nbd: %s\n", traced.error().message.c_str());
      return 1;
    }
  }
  StopState state(engine.loop());
  int status;
  {
    SignalWatcher watcher(engine.loop(), &state);
    status = engine.run(co_serve(engine, o, ready_fd, &state));
  }
  return status;
}

}  // namespace strata::tools::nbd_tool
