// qcow2 check: the snapshot table read as QEMU's check reads it
// (qcow2_check_read_snapshot_table), entry by entry from the file, and
// written anew after the refcount check when entries had to be repaired
// (qcow2_check_fix_snapshot_table). Opened for a check, the image does not
// load its snapshot table (qcow2_open.cc): a broken one must not stop the
// check that can repair it.
#include <cinttypes>
#include <cstring>

#include "block/drivers/qcow2/check.h"
#include "block/drivers/qcow2/check_walk.h"
#include "block/drivers/qcow2/qcow2.h"

namespace strata::qcow2 {

namespace {

constexpr uint32_t kMaxSnapshots = 65536;
constexpr uint64_t kMaxExtraData = 1024;
constexpr uint64_t kMaxTableBytes = 1024ull * 65536;
constexpr uint64_t kEntryHeader = 40;
constexpr uint64_t kKnownExtra = 24;  // vm_state_size_large, disk_size, icount

// What reading the table found and changed.
struct TableRead {
  uint32_t count = 0;
  uint64_t end = 0;     // offset past the last entry
  int64_t reduced = 0;  // snapshots dropped off the end
  int64_t dropped = 0;  // entries whose extra data was cut to 1024 bytes
  std::vector<uint32_t> extra_sizes;
  std::vector<Snapshot> snapshots;
};

Task<Result<std::vector<uint8_t>>> co_read_bytes(Child* file, uint64_t offset, uint64_t len) {
  std::vector<uint8_t> buf(len);
  if (len) STRATA_CO_TRY(co_await file->co_preadv(offset, IoVec(buf.data(), len), 0));
  co_return buf;
}

// Entry `i` at `offset` (8-aligned), with its extra data cut to 1024 bytes
// when `repair`; `*offset` moves past it.
Task<Result<Snapshot>> co_read_entry(Child* file, uint32_t i, uint64_t* offset, bool repair,
                                     TableRead& t, CheckResult& res) {
  STRATA_CO_TRY_ASSIGN(auto fixed, co_await co_read_bytes(file, *offset, kEntryHeader));
  uint32_t extra = load_be32(&fixed[36]);
  uint16_t id_len = load_be16(&fixed[12]);
  uint16_t name_len = load_be16(&fixed[14]);
  uint32_t kept = extra;
  if (extra > kMaxExtraData) {
    if (!repair) {
      co_return Error{EFBIG, check_format("Too much extra metadata in snapshot table entry %" PRIu32
                                          "\nYou can force-remove this extra metadata with "
                                          "qemu-img check -r all",
                                          i)};
    }
    res.messages.push_back(
        check_format("Discarding too much extra metadata in snapshot table "
                     "entry %" PRIu32 " (%" PRIu32 " > %" PRIu64 ")",
                     i, extra, kMaxExtraData));
    t.dropped++;
    kept = uint32_t(kMaxExtraData);
  }
  STRATA_CO_TRY_ASSIGN(auto extra_bytes,
                       co_await co_read_bytes(file, *offset + kEntryHeader, kept));
  uint64_t strings_at = *offset + kEntryHeader + extra;
  STRATA_CO_TRY_ASSIGN(auto strings, co_await co_read_bytes(file, strings_at, id_len + name_len));
  *offset = strings_at + id_len + name_len;
  // The entry as it will be kept, parsed by the table's own parser.
  store_be32(&fixed[36], kept);
  std::vector<uint8_t> entry(fixed);
  entry.insert(entry.end(), extra_bytes.begin(), extra_bytes.end());
  entry.insert(entry.end(), strings.begin(), strings.end());
  STRATA_CO_TRY_ASSIGN(auto parsed, parse_snapshot_table(entry, 1));
  t.extra_sizes.push_back(kept);
  co_return std::move(parsed[0]);
}

// QEMU's qcow2_do_read_snapshots with `repair`: a table longer than 64 MiB
// loses the snapshots that overhang.
Task<Result<void>> co_read_table(Child* file, uint64_t start, bool repair, TableRead& t,
                                 CheckResult& res) {
  uint64_t offset = start;
  uint64_t length = 0;
  for (uint32_t i = 0; i < t.count; i++) {
    uint64_t before = offset;
    length = round_up(length, 8);
    offset = round_up(offset, 8);
    STRATA_CO_TRY_ASSIGN(Snapshot s, co_await co_read_entry(file, i, &offset, repair, t, res));
    length += kEntryHeader + t.extra_sizes.back() + s.id.size() + s.name.size();
    if (length > kMaxTableBytes || offset - start > uint64_t(INT32_MAX)) {
      if (!repair) {
        co_return Error{EFBIG, check_format("Snapshot table is too big\nYou can force-remove all "
                                            "%" PRIu32 " overhanging snapshots with qemu-img "
                                            "check -r all",
                                            t.count - i)};
      }
      res.messages.push_back(check_format(
          "Discarding %" PRIu32 " overhanging snapshots (snapshot table is too big)", t.count - i));
      t.reduced += t.count - i;
      t.extra_sizes.pop_back();
      t.count = i;
      offset = before;
      break;
    }
    t.snapshots.push_back(std::move(s));
  }
  t.end = offset;
  co_return Result<void>{};
}

}  // namespace

Task<Result<void>> Qcow2Driver::co_check_snapshot_table(int fix, CheckResult& res) {
  bool repair = fix & kFixErrors;
  snapshots_.clear();
  snapshot_table_bytes_ = 0;
  TableRead t;
  t.count = header_.nb_snapshots;
  uint64_t offset = header_.snapshots_offset;
  if (t.count > kMaxSnapshots && repair) {
    res.messages.push_back(
        check_format("Discarding %" PRIu32 " overhanging snapshots", t.count - kMaxSnapshots));
    t.reduced += t.count - kMaxSnapshots;
    t.count = kMaxSnapshots;
  }
  // QEMU's qcow2_validate_table.
  Error invalid;
  if (t.count > kMaxSnapshots) {
    invalid = Error{EFBIG, "snapshot table too large"};
  } else if (uint64_t(INT64_MAX) - uint64_t(t.count) * kEntryHeader < offset ||
             offset % cluster_size()) {
    invalid = Error{EINVAL, "snapshot table offset invalid"};
  }
  if (!invalid.message.empty()) {
    res.check_errors++;
    res.messages.push_back({"ERROR " + invalid.message, true});
    if (t.count > kMaxSnapshots) {
      res.messages.push_back(check_format("You can force-remove all %" PRIu32
                                          " overhanging snapshots with qemu-img check -r all",
                                          t.count - kMaxSnapshots));
    }
    co_return invalid;
  }
  if (auto r = co_await co_read_table(file_, offset, repair, t, res); !r) {
    res.check_errors++;
    res.messages.push_back({"ERROR failed to read the snapshot table: " + r.error().message, true});
    co_return r;
  }
  snapshots_ = std::move(t.snapshots);
  for (auto& s : snapshots_) {
    if (!s.has_disk_size) s.disk_size = header_.size;  // as QEMU reads an entry without one
  }
  snapshot_table_bytes_ = t.end - offset;
  res.corruptions += t.reduced + t.dropped;
  if (t.reduced) {
    // The header now, as QEMU: the refcount check counts what it names.
    uint8_t count[4];
    store_be32(count, t.count);
    auto r = co_await file_->co_pwrite(60, {count, sizeof count});
    if (r) r = co_await file_->co_flush();
    if (!r) {
      res.check_errors++;
      res.messages.push_back(
          std::string("ERROR failed to update the snapshot count in the image header: ") +
          std::strerror(r.error().code));
      co_return r;
    }
    header_.nb_snapshots = t.count;
    res.corruptions_fixed += t.reduced;
    res.corruptions -= t.reduced;
  }
  // Every v3 entry holds at least the image size in its extra data.
  for (uint32_t i = 0; header_.version >= 3 && i < t.extra_sizes.size(); i++) {
    if (t.extra_sizes[i] >= 16) continue;
    res.corruptions++;
    res.messages.push_back(check_format("%s snapshot table entry %" PRIu32 " is incomplete",
                                        repair ? "Repairing" : "ERROR", i));
  }
  co_return Result<void>{};
}

Task<Result<void>> Qcow2Driver::co_fix_snapshot_table(int fix, CheckResult& res) {
  if (!res.corruptions || !(fix & kFixErrors)) co_return Result<void>{};
  auto r = co_await co_write_snapshot_table(snapshots_);
  if (!r) {
    res.check_errors++;
    res.messages.push_back(std::string("ERROR failed to update snapshot table: ") +
                           std::strerror(r.error().code));
    co_return r;
  }
  res.corruptions_fixed += res.corruptions;
  res.corruptions = 0;
  co_return Result<void>{};
}

}  // namespace strata::qcow2
