// strata-img snapshot [-l | -c NAME | -a NAME | -d NAME] [-q] [-U] [-f FMT] FILE
#include <cstdio>

#include "block/drivers/qcow2/qcow2.h"
#include "strata_img/common.h"
#include "strata_img/info.h"

namespace strata::img {

namespace {

enum class Action { kList, kCreate, kApply, kDelete };

Task<int> co_snapshot(Engine& engine, OpenSpec spec, Action action, std::string name) {
  spec.writable = action != Action::kList;
  spec.no_backing = true;
  auto drive = co_await co_open_image(engine, spec);
  if (!drive) {
    error_report(drive.error().message);
    co_return 1;
  }
  Node* node = (*drive)->edge()->node();
  auto* q = dynamic_cast<qcow2::Qcow2Driver*>(&node->driver());
  int rc = 0;
  if (!q) {
    error_report("This image format does not support snapshots");
    rc = 1;
  } else if (action == Action::kList) {
    if (!q->snapshots().empty()) {
      std::printf("Snapshot list:\n%s", snapshot_table_text(q->snapshots()).c_str());
    }
  } else {
    co_await node->co_drain_begin();
    Result<void> r;
    std::string what;
    if (action == Action::kCreate) {
      r = co_await q->co_snapshot_create(name, 0);  // as qemu-img
      what = "Could not create snapshot '" + name + "': ";
    } else if (action == Action::kApply) {
      r = co_await q->co_snapshot_apply(name);
      what = "Could not apply snapshot '" + name + "': ";
    } else {
      r = co_await q->co_snapshot_delete(name);
      what = "Could not delete snapshot '" + name + "': ";
    }
    node->drain_end();
    if (!r) {
      error_report(what + r.error().message);
      rc = 1;
    }
  }
  co_await (*drive)->co_close();
  co_return rc;
}

}  // namespace

int cmd_snapshot(Engine& engine, const Args& args) {
  auto longopts = long_options(kLongImageOpts | kLongObject | kLongForceShare, {});
  OptionParser p(args, "la:c:d:f:hqU", longopts.data());
  CommonOptions common;
  Action action = Action::kList;
  int actions = 0;
  std::string name;
  for (int c; (c = p.next()) != -1;) {
    OptionUse use = handle_common_option(c, p.arg, &common);
    if (use == OptionUse::kError) return 1;
    if (use == OptionUse::kHandled) continue;
    switch (c) {
      case 'l':
        action = Action::kList;
        actions++;
        break;
      case 'c':
        action = Action::kCreate;
        name = p.arg;
        actions++;
        break;
      case 'a':
        action = Action::kApply;
        name = p.arg;
        actions++;
        break;
      case 'd':
        action = Action::kDelete;
        name = p.arg;
        actions++;
        break;
      case 'h':
        std::printf(
            "Usage: strata-img snapshot [-l | -a snapshot | -c snapshot | -d snapshot] filename\n");
        return 0;
      default:
        return 1;
    }
  }
  if (actions > 1) {
    error_report("Cannot mix '-l', '-a', '-c', '-d'");
    return 1;
  }
  if (p.rest.size() != 1) {
    error_report("Expecting one image file name");
    return 1;
  }
  common.spec.filename = p.rest[0];
  return engine.run(co_snapshot(engine, common.spec, action, name));
}

}  // namespace strata::img
