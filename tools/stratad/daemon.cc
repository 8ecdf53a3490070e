// Process life: daemonizing, pid file, signals, startup, serving, shutdown.
#include "stratad/daemon.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <thread>

#include "base/fs.h"
#include "base/log.h"
#include "base/pidfile.h"
#include "qmp/context.h"
#include "qmp/server.h"
#include "stratad/startup.h"

namespace strata::stratad {

namespace {

void fail(const std::string& message) {
  std::fprintf(stderr, "stratad: %s\n", message.c_str());
}

// Forks; the parent waits for the child to report startup and exits with
// its status. Returns the write end of the status pipe in the child.
int daemonize_or_exit() {
  int fds[2];
  if (pipe(fds) != 0) {
    fail(std::string("pipe: ") + std::strerror(errno));
    std::exit(1);
  }
  pid_t pid = fork();
  if (pid < 0) {
    fail(std::string("fork: ") + std::strerror(errno));
    std::exit(1);
  }
  if (pid > 0) {
    close(fds[1]);
    char status = 1;
    ssize_t n = read(fds[0], &status, 1);
    std::_Exit(n == 1 ? status : 1);
  }
  close(fds[0]);
  setsid();
  return fds[1];
}

void finish_daemonizing(int status_fd, char status) {
  if (status_fd < 0) return;
  if (status == 0) {
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
      dup2(null, STDIN_FILENO);
      dup2(null, STDOUT_FILENO);
      dup2(null, STDERR_FILENO);
      if (null > STDERR_FILENO) close(null);
    }
    if (chdir("/") != 0) {
      // Keep the current directory; relative paths were resolved already.
    }
  }
  ssize_t n = write(status_fd, &status, 1);
  (void)n;
  close(status_fd);
}

// Waits for SIGINT/SIGTERM/SIGHUP (blocked in every thread) and asks the
// loop to shut down.
class SignalWatcher {
 public:
  explicit SignalWatcher(Loop& loop, qmp::QmpContext& ctx) {
    thread_ = std::thread([this, &loop, &ctx] { wait_loop(loop, ctx); });
  }
  ~SignalWatcher() {
    stopping_ = true;
    pthread_kill(thread_.native_handle(), SIGTERM);
    thread_.join();
  }
  static void block_signals() {
    sigset_t set = signal_set();
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
  }

 private:
  static sigset_t signal_set() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    return set;
  }
  void wait_loop(Loop& loop, qmp::QmpContext& ctx) {
    sigset_t set = signal_set();
    for (;;) {
      int sig = 0;
      if (sigwait(&set, &sig) != 0) continue;
      if (stopping_) return;
      loop.post([&ctx] { ctx.request_shutdown(); });
    }
  }
  std::thread thread_;
  std::atomic<bool> stopping_{false};
};

struct Daemon {
  Engine& engine;
  qmp::QmpContext& ctx;
  qmp::Server& server;
  CoEvent shutdown;
  CoEvent keepalive_done;
};

Task<Result<void>> co_startup(Daemon* d, const CommandLine* cl) {
  Startup startup(d->ctx, d->server);
  for (const auto& option : cl->actions) {
    auto r = co_await startup.co_apply(option);
    if (!r)
      co_return Error{r.error().code,
                      "--" + option.name + " " + option.value + ": " + r.error().message};
  }
  co_return Result<void>{};
}

Task<void> co_shutdown(Daemon* d) {
  co_await d->ctx.co_run_shutdown_hooks();
  co_await d->server.co_close();
  co_await d->engine.co_close_all();
}

// Keeps the loop alive while nothing else does (no monitor, no export):
// the daemon then only waits for a signal, as qemu-storage-daemon does.
Task<void> co_keepalive(Daemon* d) {
  while (!d->shutdown.is_set()) co_await d->engine.loop().co_sleep(100);
  d->keepalive_done.set();
}

// Returns once the keep-alive task has ended too, so that no coroutine is
// left suspended when the loop stops.
Task<void> co_serve(Daemon* d) {
  d->engine.loop().spawn(co_keepalive(d));
  co_await d->shutdown.co_wait();
  co_await co_shutdown(d);
  co_await d->keepalive_done.co_wait();
}

}  // namespace

int run_daemon(const CommandLine& cl) {
  int status_fd = cl.daemonize ? daemonize_or_exit() : -1;
  // A client that goes away must not kill the daemon: writes then fail
  // with EPIPE instead.
  signal(SIGPIPE, SIG_IGN);
  fs::raise_open_file_limit();
  SignalWatcher::block_signals();
  Engine engine;
  engine.logger().set_level(LogLevel::kWarning);
  qmp::QmpContext ctx(engine);
  qmp::Server server(ctx);
  Daemon d{engine, ctx, server, CoEvent(engine.loop()), CoEvent(engine.loop())};
  ctx.set_event_sink([&server](const std::string& name, const nlohmann::json& data) {
    server.broadcast_event(name, data);
  });
  // Deferred, so that `quit` is answered before the monitors close.
  ctx.set_shutdown_handler([&d] { d.engine.loop().post([&d] { d.shutdown.set(); }); });

  // Monitors are greeted once the command line is applied (as
  // qemu-storage-daemon, which runs no main loop before that).
  server.hold();
  auto started = engine.run(co_startup(&d, &cl));
  // Written and locked as qemu-storage-daemon does (base/pidfile.h).
  PidFile pidfile;
  if (started && !cl.pidfile.empty()) {
    auto written = PidFile::create(cl.pidfile);
    if (written) {
      pidfile = std::move(*written);
    } else {
      started = Error{written.error().code, "cannot create PID file: " + written.error().message};
    }
  }
  if (!started) {
    fail(started.error().message);
    engine.run(co_shutdown(&d));
    finish_daemonizing(status_fd, 1);
    return 1;
  }
  finish_daemonizing(status_fd, 0);
  server.release();
  {
    SignalWatcher signals(engine.loop(), ctx);
    engine.run(co_serve(&d));
  }
  pidfile.remove();
  return 0;
}

}  // namespace strata::stratad
