// The stratad process: applies the command line to an Engine and its QMP
// server, serves until `quit` or SIGINT/SIGTERM/SIGHUP, then shuts down
// cleanly (monitors closed, images flushed and unlocked).
//
// Contract: run_daemon() returns the process exit status. With --daemonize
// the parent exits only once startup has succeeded (or with the error), and
// the pid file is written after startup, as qemu-storage-daemon does.
// Thread rules: main thread; a helper thread only waits for signals and
// posts to the loop.
#pragma once

#include "stratad/options.h"

namespace strata::stratad {

int run_daemon(const CommandLine& command_line);

}  // namespace strata::stratad
