// Applies stratad's command-line options, in order, to a running Engine and
// QMP server: --blockdev (blockdev-add), --chardev + --monitor (QMP
// listeners), --object (object-add), --nbd-server and --export (the
// nbd-server-start and block-export-add commands, once the NBD area has
// registered them: nothing here changes when it does).
// Thread rules: loop-thread only.
#pragma once

#include <map>
#include <string>

#include "qmp/context.h"
#include "qmp/server.h"
#include "stratad/options.h"

namespace strata::stratad {

class Startup {
 public:
  Startup(qmp::QmpContext& ctx, qmp::Server& server) : ctx_(ctx), server_(server) {}

  // Applies one option; the error text is what the daemon prints.
  Task<Result<void>> co_apply(ActionOption option);

 private:
  struct Chardev {
    std::string path;  // Unix socket, or
    std::string host;  // TCP
    uint16_t port = 0;
  };

  Task<Result<void>> co_blockdev(std::string value);
  Result<void> chardev(const std::string& value);
  Result<void> monitor(const std::string& value);
  Task<Result<void>> co_object(std::string value);
  Task<Result<void>> co_nbd_server(std::string value);
  Task<Result<void>> co_export(std::string value);

  qmp::QmpContext& ctx_;
  qmp::Server& server_;
  std::map<std::string, Chardev> chardevs_;
  std::map<std::string, bool> chardev_in_use_;
};

}  // namespace strata::stratad
