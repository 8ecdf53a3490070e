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
#include "strata_img/convert.h"
#include "strata_img/create_opts.h"
#include "strata_img/json_out.h"

namespace strata::img {

namespace {

using ojson = nlohmann::ordered_json;

struct MeasureArgs {
  CommonOptions common;
  std::string out_format = "raw";
  std::string options;         // the -o lists, joined
  uint64_t size = UINT64_MAX;  // --size; UINT64_MAX: from the image
  SnapshotParam snapshot;      // -l
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

// The target's options as qcow2_measure reads them (its messages: compat
// and refcount widths are named by their -o names here).
Result<qcow2::CreateOptions> target_options(const CreateOptionSet& set) {
  qcow2::CreateOptions o;
  o.extended_l2 = set.flag("extended_l2", false);
  o.cluster_size = set.number("cluster_size", 65536);
  uint64_t cs = o.cluster_size;
  if (cs < 512 || cs > (2u << 20) || (cs & (cs - 1))) {
    return Error{EINVAL, "Cluster size must be a power of two between 512 and 2048k"};
  }
  if (o.extended_l2 && cs < 16384) {
    return Error{EINVAL,
                 "Extended L2 entries are only supported with cluster sizes of at least 16384 "
                 "bytes"};
  }
  if (set.has("compat")) {
    std::string v = set.get("compat");
    if (v == "0.10") {
      o.version = 2;
    } else if (v == "1.1") {
      o.version = 3;
    } else {
      return Error{EINVAL, "Invalid compat version: " + v};
    }
  }
  uint64_t rb = set.number("refcount_bits", 16);
  if (rb == 0 || rb > 64 || (rb & (rb - 1))) {
    return Error{EINVAL, "Refcount width must be a power of two and may not exceed 64 bits"};
  }
  if (o.version < 3 && rb != 16) {
    return Error{EINVAL,
                 "Different refcount widths than 16 bits require compatibility level 1.1 or above "
                 "(use compat=1.1 or greater)"};
  }
  o.refcount_bits = uint32_t(rb);
  std::string prealloc = set.get("preallocation");
  if (!prealloc.empty() && !parse_preallocation(prealloc, &o.preallocation)) {
    return Error{EINVAL, "Parameter 'preallocation' does not accept value '" + prealloc + "'"};
  }
  o.backing_file = set.get("backing_file");
  if (!o.backing_file.empty() && o.preallocation != Preallocation::kOff) {
    return Error{EINVAL,
                 "Backing file and preallocation can only be used at the same time if extended_l2 "
                 "is on"};
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
    std::printf("%s\n", qemu_json_pretty(j).c_str());
    return;
  }
  std::printf("required size: %" PRIu64 "\nfully allocated size: %" PRIu64 "\n", m.required,
              m.fully_allocated);
  if (m.has_bitmaps) std::printf("bitmaps size: %" PRIu64 "\n", m.bitmaps);
}

// The source's virtual size and what it allocates, for a target with
// clusters of `cs` bytes.
struct SourceFacts {
  uint64_t size = 0;
  uint64_t data = 0;
  uint64_t bitmaps = 0;
  bool qcow2 = false;
};

Task<Result<SourceFacts>> co_source_facts(Engine& engine, const MeasureArgs& a, uint64_t cs) {
  STRATA_CO_TRY_ASSIGN(auto drive, co_await co_open_image(engine, a.common.spec));
  Node* src = drive->edge()->node();
  SourceFacts f;
  Result<void> r;
  if (a.snapshot.given()) {
    r = co_await co_load_snapshot(src, a.snapshot);
    if (!r) r = Error{r.error().code, "Failed to load snapshot: " + r.error().message};
  }
  if (r) {
    f.size = src->size();
    f.qcow2 = src->driver_name() == "qcow2";
    auto bytes = co_await co_allocated_bytes(src, cs);
    if (bytes) {
      f.data = *bytes;
    } else {
      r = bytes.error();
    }
    if (f.qcow2) f.bitmaps = bitmaps_bytes(src, cs);
  }
  co_await drive->co_close();
  if (!r) co_return r.error();
  co_return f;
}

Task<int> co_measure(Engine& engine, MeasureArgs a) {
  SourceFacts facts;
  bool from_image = a.size == UINT64_MAX;
  auto set = CreateOptionSet::for_create(a.out_format);
  // The source is opened first, as qemu-img does; its numbers need the
  // target's cluster size, so a refused option is reported after it opens.
  uint64_t cs = 65536;
  Result<void> parsed;
  if (set && !a.options.empty()) parsed = set->parse(a.options);
  if (set && parsed) cs = set->number("cluster_size", 65536);
  if (cs < 512 || cs > (2u << 20) || (cs & (cs - 1))) cs = 65536;
  if (from_image) {
    auto f = co_await co_source_facts(engine, a, cs);
    if (!f) {
      error_report(f.error().message);
      co_return 1;
    }
    facts = *f;
  } else {
    facts.size = a.size;
  }
  if (!set) {
    error_report("Unknown file format '" + a.out_format + "'");
    co_return 1;
  }
  if (!parsed) {
    error_report(parsed.error().message);
    error_report("Invalid options for file format '" + a.out_format + "'");
    co_return 1;
  }
  Measurement m;
  if (a.out_format == "raw") {
    m.required = m.fully_allocated = qcow2::round_up(facts.size, 512);
  } else {
    auto target = target_options(*set);
    if (!target) {
      error_report(target.error().message);
      co_return 1;
    }
    m = measure_qcow2(*target, facts.size, facts.data, from_image && facts.qcow2);
    m.bitmaps = m.has_bitmaps ? facts.bitmaps : 0;
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
        if (!valid_option_list(p.arg)) {
          error_report("Invalid option list: " + p.arg);
          return 1;
        }
        a.options += (a.options.empty() ? "" : ",") + p.arg;
        break;
      case 'l':
        if (!parse_snapshot_param(p.arg, &a.snapshot)) return 1;
        break;
      case kSize:
        if (!cvtnum("image size", p.arg, &a.size)) return 1;
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
  bool has_size = a.size != UINT64_MAX;
  if (p.rest.size() > 1) {
    error_report("At most one filename argument is allowed.");
    return 1;
  }
  if (p.rest.empty() &&
      (a.common.spec.image_opts || !a.common.spec.format.empty() || a.snapshot.given())) {
    error_report("--image-opts, -f, and -l require a filename argument.");
    return 1;
  }
  if (!p.rest.empty() && has_size) {
    error_report("--size N cannot be used together with a filename.");
    return 1;
  }
  if (p.rest.empty() && !has_size) {
    error_report("Either --size N or one filename must be specified.");
    return 1;
  }
  if (!p.rest.empty()) a.common.spec.filename = p.rest[0];
  return engine.run(co_measure(engine, a));
}

}  // namespace strata::img
