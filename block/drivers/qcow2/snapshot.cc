#include "block/drivers/qcow2/snapshot.h"

#include "block/drivers/qcow2/format.h"

namespace strata::qcow2 {

Result<std::vector<Snapshot>> parse_snapshot_table(std::span<const uint8_t> d, uint32_t count) {
  std::vector<Snapshot> out;
  uint64_t pos = 0;
  for (uint32_t i = 0; i < count; i++) {
    if (pos + 40 > d.size()) return Error{EINVAL, "Snapshot table is truncated"};
    const uint8_t* p = &d[pos];
    Snapshot s;
    s.l1_table_offset = load_be64(p);
    s.l1_size = load_be32(p + 8);
    uint16_t id_len = load_be16(p + 12);
    uint16_t name_len = load_be16(p + 14);
    s.date_sec = load_be32(p + 16);
    s.date_nsec = load_be32(p + 20);
    s.vm_clock_nsec = load_be64(p + 24);
    s.vm_state_size = load_be32(p + 32);
    uint32_t extra = load_be32(p + 36);
    if (extra > 1024) return Error{EINVAL, "Too much extra metadata in snapshot table entry"};
    uint64_t need = 40 + uint64_t(extra) + id_len + name_len;
    if (pos + need > d.size()) return Error{EINVAL, "Snapshot table entry runs past the table"};
    const uint8_t* x = p + 40;
    if (extra >= 8) s.vm_state_size = load_be64(x);
    if (extra >= 16) {
      s.disk_size = load_be64(x + 8);
      s.has_disk_size = true;
    }
    if (extra >= 24) {
      s.icount = int64_t(load_be64(x + 16));
      s.has_icount = true;
    }
    if (extra > 24) s.unknown_extra.assign(x + 24, x + extra);
    const char* str = reinterpret_cast<const char*>(x + extra);
    s.id.assign(str, id_len);
    s.name.assign(str + id_len, name_len);
    pos += round_up(need, 8);
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<uint8_t> serialize_snapshot_table(const std::vector<Snapshot>& snapshots) {
  std::vector<uint8_t> out;
  for (const auto& s : snapshots) {
    uint32_t extra = 24 + uint32_t(s.unknown_extra.size());
    uint64_t need = 40 + uint64_t(extra) + s.id.size() + s.name.size();
    // Entries start 8-byte aligned; the table ends right after the last
    // one, as QEMU writes it.
    size_t pos = round_up(out.size(), 8);
    out.resize(pos + need, 0);
    uint8_t* p = &out[pos];
    store_be64(p, s.l1_table_offset);
    store_be32(p + 8, s.l1_size);
    store_be16(p + 12, uint16_t(s.id.size()));
    store_be16(p + 14, uint16_t(s.name.size()));
    store_be32(p + 16, s.date_sec);
    store_be32(p + 20, s.date_nsec);
    store_be64(p + 24, s.vm_clock_nsec);
    store_be32(p + 32, s.vm_state_size > UINT32_MAX ? 0 : uint32_t(s.vm_state_size));
    store_be32(p + 36, extra);
    store_be64(p + 40, s.vm_state_size);
    store_be64(p + 48, s.disk_size);
    store_be64(p + 56, uint64_t(s.icount));
    if (!s.unknown_extra.empty())
      std::memcpy(p + 64, s.unknown_extra.data(), s.unknown_extra.size());
    std::memcpy(p + 40 + extra, s.id.data(), s.id.size());
    std::memcpy(p + 40 + extra + s.id.size(), s.name.data(), s.name.size());
  }
  return out;
}

}  // namespace strata::qcow2
