// strata-img snapshot [-l | -c NAME | -a NAME | -d NAME] [-q] [-U] [--image-opts] FILE
// As qemu-img: -a takes an ID or a name (IDs first), -d a name; names may
// repeat; without an action the image is opened read-write and nothing
// is done; formats without snapshots list nothing.
#include <cstdio>
#include <cstring>

#include "block/core/image_ops.h"
#include "strata_img/common.h"
#include "strata_img/info.h"

namespace strata::img {

namespace {

enum class Action { kNone, kList, kCreate, kApply, kDelete };

// Runs `action` on a drained node whose format has snapshots (`ops`, null
// for one without); prints qemu-img's message and returns 1 on failure.
Task<int> co_act(Node* node, ImageOps* ops, Action action, const std::string& name) {
  if (action == Action::kList) {
    std::vector<SnapshotEntry> snapshots = snapshots_of(node);
    if (!snapshots.empty()) {
      std::printf("Snapshot list:\n%s", snapshot_table_text(snapshots).c_str());
    }
    co_return 0;
  }
  if (action == Action::kNone) co_return 0;
  if (!ops) {
    if (action == Action::kCreate) {
      error_report("Could not create snapshot '" + name + "': -95 (Operation not supported)");
    } else if (action == Action::kApply) {
      error_report("Could not apply snapshot '" + name +
                   "': Block driver does not support snapshots");
    } else {
      error_report("Could not delete snapshot '" + name + "': snapshot not found");
    }
    co_return 1;
  }
  co_await node->co_drain_begin();
  Result<void> r;
  std::string what;
  if (action == Action::kCreate) {
    r = co_await ops->co_snapshot_create(name, 0);  // as qemu-img
    if (!r) {
      what = "Could not create snapshot '" + name + "': -" + std::to_string(r.error().code) + " (" +
             std::strerror(r.error().code) + ")";
    }
  } else if (action == Action::kApply) {
    r = co_await ops->co_snapshot_apply(name);
    if (!r) {
      what = "Could not apply snapshot '" + name +
             "': Failed to load snapshot: " + std::strerror(r.error().code);
    }
  } else {
    // -d names a snapshot by its name only (qemu-img 7.2's
    // bdrv_snapshot_find); the first of that name goes, by its ID.
    std::string id;
    for (const auto& s : ops->list_snapshots()) {
      if (s.name == name) {
        id = s.id;
        break;
      }
    }
    if (id.empty()) {
      r = Error{ENOENT, "snapshot not found"};
    } else {
      r = co_await ops->co_snapshot_delete(id);
    }
    if (!r) what = "Could not delete snapshot '" + name + "': " + r.error().message;
  }
  node->drain_end();
  if (!r) {
    // QEMU prints the corruption it finds on a line of its own first.
    const std::string& m = r.error().message;
    if (m.rfind("qcow2: Marking image as corrupt", 0) == 0) std::fprintf(stderr, "%s\n", m.c_str());
    error_report(what);
    co_return 1;
  }
  co_return 0;
}

Task<int> co_snapshot(Engine& engine, OpenSpec spec, Action action, std::string name) {
  spec.writable = action != Action::kList;
  spec.no_backing = true;
  auto drive = co_await co_open_image(engine, spec);
  if (!drive) {
    error_report(drive.error().message);
    co_return 1;
  }
  Node* node = (*drive)->edge()->node();
  int rc = co_await co_act(node, node->driver().image_ops(), action, name);
  co_await (*drive)->co_close();
  co_return rc;
}

}  // namespace

int cmd_snapshot(Engine& engine, const Args& args) {
  auto longopts = long_options(kLongImageOpts | kLongObject | kLongForceShare, {});
  OptionParser p(args, "la:c:d:hqU", longopts.data());
  CommonOptions common;
  Action action = Action::kNone;
  int actions = 0;
  std::string name;
  for (int c; (c = p.next()) != -1;) {
    OptionUse use = handle_common_option(c, p.arg, &common);
    if (use == OptionUse::kError) return 1;
    if (use == OptionUse::kHandled) continue;
    Action next = c == 'l'   ? Action::kList
                  : c == 'c' ? Action::kCreate
                  : c == 'a' ? Action::kApply
                  : c == 'd' ? Action::kDelete
                             : Action::kNone;
    if (next != Action::kNone) {
      action = next;
      if (next != Action::kList) name = p.arg;
      actions++;
      continue;
    }
    if (c == 'h') {
      std::printf(
          "Usage: strata-img snapshot [-l | -a snapshot | -c snapshot | -d snapshot] filename\n");
      return 0;
    }
    return 1;
  }
  if (actions > 1) return usage_error("Cannot mix '-l', '-a', '-c', '-d'");
  if (p.rest.size() != 1) return usage_error("Expecting one image file name");
  common.spec.filename = p.rest[0];
  return engine.run(co_snapshot(engine, common.spec, action, name));
}

}  // namespace strata::img
