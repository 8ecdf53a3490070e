// strata-img measure [--output=human|json] [-O FMT] [-o OPTIONS]
//                    [--size N | [-f FMT] [--image-opts] [-U] FILE]
// Prints the size a new image needs ("required") and would reach fully
// allocated, with qemu-img's arithmetic: qcow2 metadata for the whole
// virtual size (header, L1, L2, refcount table and blocks), data clusters
// that the source allocates with non-zero content, and the space of the
// source's persistent bitmaps.
#include <cinttypes>
#include <cstdio>

#include "block/bitmap/dirty_bitmap.h"
#include "block/drivers/qcow2/create.h"
#include "block/drivers/qcow2/format.h"
#include "strata_img/common.h"

namespace strata::img {

namespace {

using ojson = nlohmann::ordered_json;

struct MeasureArgs {
  CommonOptions common;
  std::string out_format = "raw";
  std::map<std::string, std::string> opts;
  std::string size_text;
  bool has_size = false;
};

struct Measurement {
  uint64_t required = 0;
  uint64_t fully_allocated = 0;
  bool has_bitmaps = false;
  uint64_t bitmaps = 0;
};

// Clusters of refcount table and blocks needed to count `clusters`
// clusters plus themselves.
uint64_t refcount_metadata_bytes(uint64_t clusters, uint64_t cs, uint32_t refcount_order) {
  uint64_t per_table_cluster = cs / 8;
  uint64_t per_block = cs * 8 >> refcount_order;
  uint64_t table = 0, blocks = 0, n = 0, last;
  do {
    last = n;
    blocks = qcow2::div_round_up(clusters + table + blocks, per_block);
    table = qcow2::div_round_up(blocks, per_table_cluster);
    n = clusters + blocks + table;
  } while (n != last);
  return (blocks + table) * cs;
}

// Size of a fully preallocated qcow2 image of `virtual_size` (L2 entries of
// `l2e` bytes: 16 with extended L2).
uint64_t qcow2_full_size(uint64_t virtual_size, uint64_t cs, uint32_t refcount_order,
                         uint64_t l2e) {
  uint64_t aligned = qcow2::round_up(virtual_size, cs);
  uint64_t meta = cs;
  uint64_t l2_entries = qcow2::round_up(aligned / cs, cs / l2e);
  meta += l2_entries * l2e;
  uint64_t l1_entries = qcow2::round_up(l2_entries * l2e / cs, cs / 8);
  meta += l1_entries * 8;
  meta += refcount_metadata_bytes((meta + aligned) / cs, cs, refcount_order);
  return meta + aligned;
}

// Bytes of clusters the source allocates with non-zero content.
Task<Result<uint64_t>> co_allocated_bytes(Node* src, uint64_t cs) {
  uint64_t size = src->size();
  uint64_t required = 0;
  for (uint64_t off = 0; off < size;) {
    STRATA_CO_TRY_ASSIGN(ChainStatus st, co_await co_chain_status(src, off, size - off));
    uint64_t n = std::max<uint64_t>(st.bytes, 1);
    if (!st.zero && st.data && st.present) {
      n = qcow2::round_up(off + n, cs) - off;
      required += off % cs + n;
    }
    off += n;
  }
  co_return required;
}

uint64_t bitmaps_bytes(Node* src, uint64_t cs) {
  BitmapSet* set = src->bitmaps_if_any();
  if (!set) return 0;
  uint64_t total = 0, dir = 0;
  for (DirtyBitmap* bm : set->all()) {
    if (!bm->persistent()) continue;
    uint64_t bits = qcow2::div_round_up(bm->size(), bm->granularity());
    uint64_t clusters = qcow2::div_round_up(qcow2::div_round_up(bits, 8), cs);
    total += clusters * cs + qcow2::round_up(clusters * 8, cs);
    dir += qcow2::round_up(24 + bm->name().size(), 8);
  }
  return total + qcow2::round_up(dir, cs);
}

Result<qcow2::CreateOptions> target_options(const MeasureArgs& a) {
  qcow2::CreateOptions o;
  for (const auto& [k, v] : a.opts) {
    if (k == "cluster_size") {
      if (!parse_img_size(v, &o.cluster_size)) {
        return Error{EINVAL, "Parameter 'cluster_size' expects a size"};
      }
    } else if (k == "compat") {
      STRATA_TRY_ASSIGN(o.version, qcow2::parse_compat(v));
    } else if (k == "refcount_bits") {
      o.refcount_bits = uint32_t(std::strtoul(v.c_str(), nullptr, 10));
    } else if (k == "preallocation") {
      if (!parse_preallocation(v, &o.preallocation)) {
        return Error{EINVAL, "Parameter 'preallocation' does not accept value '" + v + "'"};
      }
    } else if (k == "backing_file") {
      o.backing_file = v;
    } else if (k == "extended_l2") {
      if (!parse_bool_word(v, &o.extended_l2)) {
        return Error{EINVAL, "Parameter 'extended_l2' expects 'on' or 'off'"};
      }
    } else if (k == "backing_fmt" || k == "lazy_refcounts" || k == "compression_type" ||
               k == "data_file" || k == "data_file_raw" || k == "size") {
      continue;
    } else {
      return Error{EINVAL, "Invalid parameter '" + k + "'"};
    }
  }
  uint64_t cs = o.cluster_size;
  if (cs < 512 || cs > (2u << 20) || (cs & (cs - 1))) {
    return Error{EINVAL, "Cluster size must be a power of two between 512 and 2048k"};
  }
  if (o.extended_l2 && cs < 16384) {
    return Error{EINVAL,
                 "Extended L2 entries are only supported with cluster sizes of at least 16384 "
                 "bytes"};
  }
  uint32_t rb = o.refcount_bits;
  if (rb == 0 || rb > 64 || (rb & (rb - 1))) {
    return Error{EINVAL, "Refcount width must be a power of two and may not exceed 64 bits"};
  }
  return o;
}

Measurement measure_qcow2(const qcow2::CreateOptions& o, uint64_t size, uint64_t data_bytes,
                          bool from_image) {
  Measurement m;
  uint32_t order = 0;
  while ((1u << order) < o.refcount_bits) order++;
  uint64_t virtual_size = qcow2::round_up(size, o.cluster_size);
  uint64_t required = data_bytes;
  if (!o.backing_file.empty() || o.preallocation == Preallocation::kFalloc ||
      o.preallocation == Preallocation::kFull) {
    required = virtual_size;
  }
  m.fully_allocated = qcow2_full_size(virtual_size, o.cluster_size, order, o.extended_l2 ? 16 : 8);
  m.required = m.fully_allocated - virtual_size + required;
  m.has_bitmaps = from_image && o.version >= 3;
  return m;
}

void print(const Measurement& m, bool json) {
  if (json) {
    ojson j;
    if (m.has_bitmaps) j["bitmaps"] = m.bitmaps;
    j["required"] = m.required;
    j["fully-allocated"] = m.fully_allocated;
    std::printf("%s\n", j.dump(4).c_str());
    return;
  }
  std::printf("required size: %" PRIu64 "\nfully allocated size: %" PRIu64 "\n", m.required,
              m.fully_allocated);
  if (m.has_bitmaps) std::printf("bitmaps size: %" PRIu64 "\n", m.bitmaps);
}

Task<int> co_measure(Engine& engine, MeasureArgs a) {
  if (a.out_format != "qcow2" && a.out_format != "raw") {
    error_report("Unknown file format '" + a.out_format + "'");
    co_return 1;
  }
  auto target = target_options(a);
  if (!target) {
    error_report(target.error().message);
    co_return 1;
  }
  uint64_t size = 0, data = 0;
  bool qcow2_source = false;
  Measurement m;
  if (a.has_size) {
    if (!parse_img_size(a.size_text, &size)) {
      error_report("Invalid image size specified. You may use k, M, G, T, P or E suffixes for");
      error_report("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
      co_return 1;
    }
  } else {
    auto drive = co_await co_open_image(engine, a.common.spec);
    if (!drive) {
      error_report(drive.error().message);
      co_return 1;
    }
    Node* src = (*drive)->edge()->node();
    size = src->size();
    qcow2_source = src->driver_name() == "qcow2";
    auto bytes = co_await co_allocated_bytes(src, target->cluster_size);
    if (qcow2_source) m.bitmaps = bitmaps_bytes(src, target->cluster_size);
    co_await (*drive)->co_close();
    if (!bytes) {
      error_report(bytes.error().message);
      co_return 1;
    }
    data = *bytes;
  }
  if (a.out_format == "raw") {
    m = Measurement{};
    m.required = m.fully_allocated = qcow2::round_up(size, 512);
  } else {
    uint64_t bitmaps = m.bitmaps;
    m = measure_qcow2(*target, size, data, qcow2_source);
    m.bitmaps = m.has_bitmaps ? bitmaps : 0;
  }
  print(m, a.common.json);
  co_return 0;
}

}  // namespace

int cmd_measure(Engine& engine, const Args& args) {
  enum { kSize = kOptFirstOwn };
  auto longopts = long_options(kLongObject | kLongImageOpts | kLongOutput | kLongForceShare,
                               {{"size", required_argument, nullptr, kSize}});
  OptionParser p(args, "hf:O:o:l:U", longopts.data());
  MeasureArgs a;
  for (int c; (c = p.next()) != -1;) {
    OptionUse use = handle_common_option(c, p.arg, &a.common);
    if (use == OptionUse::kError) return 1;
    if (use == OptionUse::kHandled) continue;
    switch (c) {
      case 'O':
        a.out_format = p.arg;
        break;
      case 'o':
        parse_option_string(p.arg, &a.opts);
        break;
      case 'l':
        error_report("Measuring internal snapshots is not supported");
        return 1;
      case kSize:
        a.size_text = p.arg;
        a.has_size = true;
        break;
      case 'h':
        std::printf(
            "Usage: strata-img measure [--output=ofmt] [-O output_fmt] [-o options] "
            "[--size N | [-f fmt] filename]\n");
        return 0;
      default:
        return 1;
    }
  }
  if (p.rest.size() > 1 || (!a.has_size && p.rest.empty())) {
    error_report("Either --size N or one filename must be specified.");
    return 1;
  }
  if (a.has_size && !p.rest.empty()) {
    error_report("--size N cannot be used together with a filename.");
    return 1;
  }
  if (!p.rest.empty()) a.common.spec.filename = p.rest[0];
  a.common.spec.force_share = true;
  return engine.run(co_measure(engine, a));
}

}  // namespace strata::img
