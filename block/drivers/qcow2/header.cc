// Parsing and writing cluster 0 of a qcow2 image.
#include <algorithm>
#include <cstdio>

#include "block/drivers/qcow2/format.h"

namespace strata::qcow2 {

namespace {

Error invalid(const std::string& what) {
  return Error{EINVAL, what};
}

Result<void> parse_fixed_fields(std::span<const uint8_t> d, Header& h) {
  if (d.size() < kV2HeaderLength) return invalid("Image is not in qcow2 format");
  if (load_be32(d.data()) != kMagic) return invalid("Image is not in qcow2 format");
  h.version = load_be32(&d[4]);
  if (h.version < 2 || h.version > 3) {
    return Error{ENOTSUP, "Unsupported qcow2 version " + std::to_string(h.version)};
  }
  h.backing_file_offset = load_be64(&d[8]);
  h.backing_file_size = load_be32(&d[16]);
  h.cluster_bits = load_be32(&d[20]);
  h.size = load_be64(&d[24]);
  h.crypt_method = load_be32(&d[32]);
  h.l1_size = load_be32(&d[36]);
  h.l1_table_offset = load_be64(&d[40]);
  h.refcount_table_offset = load_be64(&d[48]);
  h.refcount_table_clusters = load_be32(&d[56]);
  h.nb_snapshots = load_be32(&d[60]);
  h.snapshots_offset = load_be64(&d[64]);
  if (h.cluster_bits < kMinClusterBits || h.cluster_bits > kMaxClusterBits) {
    return invalid("Unsupported cluster size: 2^" + std::to_string(h.cluster_bits));
  }
  if (h.version == 2) {
    h.incompatible_features = h.compatible_features = h.autoclear_features = 0;
    h.refcount_order = 4;
    h.header_length = kV2HeaderLength;
    return {};
  }
  if (d.size() < 104) return invalid("qcow2 header exceeds cluster size");
  h.incompatible_features = load_be64(&d[72]);
  h.compatible_features = load_be64(&d[80]);
  h.autoclear_features = load_be64(&d[88]);
  h.refcount_order = load_be32(&d[96]);
  h.header_length = load_be32(&d[100]);
  if (h.header_length < 104) return invalid("qcow2 header too short");
  if (h.header_length > h.cluster_size() || h.header_length > d.size()) {
    return invalid("qcow2 header exceeds cluster size");
  }
  if (h.header_length > 104) h.compression_type = d[104];
  if (h.header_length > kV3HeaderLength) {
    h.unknown_fields.assign(d.begin() + kV3HeaderLength, d.begin() + h.header_length);
  }
  if (h.refcount_order > 6)
    return invalid("Reference count entry width too large; may not exceed 64 bits");
  return {};
}

// As QEMU's validate_compression_type.
Result<void> check_compression_type(const Header& h) {
  if (h.compression_type != kCompressionZlib && h.compression_type != kCompressionZstd) {
    return Error{ENOTSUP, "qcow2: unknown compression type: " + std::to_string(h.compression_type)};
  }
  bool bit = h.incompatible_features & kIncompatCompression;
  if (h.compression_type == kCompressionZlib && bit) {
    return invalid("qcow2: Compression type incompatible feature bit must not be set");
  }
  if (h.compression_type != kCompressionZlib && !bit) {
    return invalid("qcow2: Compression type incompatible feature bit must be set");
  }
  return {};
}

Result<void> check_values(const Header& h) {
  uint64_t cs = h.cluster_size();
  if (h.crypt_method != 0) return Error{ENOTSUP, "Encrypted qcow2 images are not supported"};
  if (h.extended_l2() && (cs >> kSubclusterBits) < 512) {
    return invalid("Unsupported subcluster size: " + std::to_string(cs >> kSubclusterBits));
  }
  STRATA_TRY(check_compression_type(h));
  if (h.refcount_table_clusters == 0)
    return invalid("Image does not contain a reference count table");
  if (uint64_t(h.refcount_table_clusters) * cs > kMaxRefcountTableBytes) {
    return invalid("Reference count table too large");
  }
  if (h.refcount_table_offset % cs) return invalid("Reference count table offset invalid");
  if (uint64_t(h.l1_size) * 8 > kMaxL1Bytes) return Error{EFBIG, "Active L1 table too large"};
  if (h.l1_table_offset % cs) return invalid("Active L1 table offset invalid");
  // The L1 must cover the virtual size.
  uint64_t shift = h.cluster_bits + h.l2_bits();
  if (h.size > (uint64_t(1) << 62)) return invalid("Image is too big");
  uint64_t needed = div_round_up(h.size, uint64_t(1) << shift);
  if (h.l1_size < needed) return invalid("L1 table is too small");
  if (h.backing_file_offset) {
    if (h.backing_file_offset > cs) return invalid("Invalid backing file offset");
    if (h.backing_file_size > 1023 || h.backing_file_offset + h.backing_file_size > cs) {
      return invalid("Backing file name too long");
    }
  }
  return {};
}

Result<void> parse_extensions(std::span<const uint8_t> d, Header& h) {
  uint64_t end = h.backing_file_offset ? h.backing_file_offset
                                       : std::min<uint64_t>(d.size(), h.cluster_size());
  end = std::min<uint64_t>(end, d.size());
  uint64_t pos = h.header_length;
  std::vector<uint32_t> seen;
  while (pos + 8 <= end) {
    uint32_t type = load_be32(&d[pos]);
    uint32_t len = load_be32(&d[pos + 4]);
    pos += 8;
    if (type == kExtEnd) return {};
    if (len > end - pos) return invalid("Header extension too large");
    if (std::find(seen.begin(), seen.end(), type) != seen.end()) {
      return invalid("Duplicate header extension");
    }
    seen.push_back(type);
    const uint8_t* p = &d[pos];
    if (type == kExtBackingFormat) {
      if (len >= 16)
        return invalid("ERROR: ext_backing_format: len=" + std::to_string(len) + " too large");
      h.backing_format.assign(reinterpret_cast<const char*>(p), len);
      h.has_backing_format = true;
    } else if (type == kExtDataFile) {
      h.data_file.assign(reinterpret_cast<const char*>(p), len);
      h.data_file.resize(strnlen(h.data_file.c_str(), len));
    } else if (type == kExtFeatureTable) {
      h.had_feature_table = true;
      for (uint32_t i = 0; i + 48 <= len; i += 48) {
        FeatureName f{p[i], p[i + 1], std::string(reinterpret_cast<const char*>(p + i + 2), 46)};
        f.name.resize(strnlen(f.name.c_str(), 46));
        h.feature_names.push_back(std::move(f));
      }
    } else {
      if (type == kExtBitmaps && len != 24) return invalid("bitmaps_ext: Invalid extension length");
      h.extensions.push_back(HeaderExtension{type, std::vector<uint8_t>(p, p + len)});
    }
    pos += round_up(len, 8);
  }
  return {};
}

void put_extension(std::vector<uint8_t>& out, uint32_t type, std::span<const uint8_t> data) {
  size_t pos = out.size();
  out.resize(pos + 8 + round_up(data.size(), 8), 0);
  store_be32(&out[pos], type);
  store_be32(&out[pos + 4], uint32_t(data.size()));
  if (!data.empty()) std::memcpy(&out[pos + 8], data.data(), data.size());
}

std::vector<uint8_t> feature_table_bytes(const std::vector<FeatureName>& names) {
  std::vector<uint8_t> out(names.size() * 48, 0);
  for (size_t i = 0; i < names.size(); i++) {
    out[i * 48] = names[i].type;
    out[i * 48 + 1] = names[i].bit;
    std::memcpy(&out[i * 48 + 2], names[i].name.data(), std::min<size_t>(46, names[i].name.size()));
  }
  return out;
}

}  // namespace

const HeaderExtension* Header::find_extension(uint32_t type) const {
  for (const auto& e : extensions) {
    if (e.type == type) return &e;
  }
  return nullptr;
}

std::vector<FeatureName> default_feature_names() {
  return {{0, 0, "dirty bit"},        {0, 1, "corrupt bit"},         {0, 2, "external data file"},
          {0, 3, "compression type"}, {0, 4, "extended L2 entries"}, {1, 0, "lazy refcounts"},
          {2, 0, "bitmaps"},          {2, 1, "raw external data"}};
}

std::string describe_unknown_incompat(const Header& h, uint64_t bits) {
  // As QEMU: the named features first, then the unnamed bits as one hex mask.
  std::string out;
  uint64_t unnamed = bits;
  for (const auto& f : h.feature_names) {
    if (f.type != 0 || f.bit >= 64 || !(unnamed & (1ull << f.bit))) continue;
    if (!out.empty()) out += ", ";
    out += f.name;
    unnamed &= ~(1ull << f.bit);
  }
  if (unnamed) {
    char hex[32];
    std::snprintf(hex, sizeof hex, "%llx", static_cast<unsigned long long>(unnamed));
    if (!out.empty()) out += ", ";
    out += std::string("Unknown incompatible feature: ") + hex;
  }
  return out;
}

Result<Header> parse_header(std::span<const uint8_t> data) {
  Header h;
  STRATA_TRY(parse_fixed_fields(data, h));
  STRATA_TRY(check_values(h));
  STRATA_TRY(parse_extensions(data, h));
  if (h.backing_file_offset) {
    if (h.backing_file_offset + h.backing_file_size > data.size()) {
      return invalid("Backing file name past the end of the header cluster");
    }
    h.backing_file.assign(reinterpret_cast<const char*>(&data[h.backing_file_offset]),
                          h.backing_file_size);
  }
  return h;
}

Result<std::vector<uint8_t>> serialize_header(const Header& h) {
  uint64_t cs = h.cluster_size();
  bool v3 = h.version >= 3;
  uint32_t header_length =
      v3 ? uint32_t(kV3HeaderLength + h.unknown_fields.size()) : kV2HeaderLength;
  std::vector<uint8_t> out(header_length, 0);
  uint8_t* p = out.data();
  store_be32(p, kMagic);
  store_be32(p + 4, h.version);
  store_be32(p + 20, h.cluster_bits);
  store_be64(p + 24, h.size);
  store_be32(p + 32, h.crypt_method);
  store_be32(p + 36, h.l1_size);
  store_be64(p + 40, h.l1_table_offset);
  store_be64(p + 48, h.refcount_table_offset);
  store_be32(p + 56, h.refcount_table_clusters);
  store_be32(p + 60, h.nb_snapshots);
  store_be64(p + 64, h.snapshots_offset);
  if (v3) {
    store_be64(p + 72, h.incompatible_features);
    store_be64(p + 80, h.compatible_features);
    store_be64(p + 88, h.autoclear_features);
    store_be32(p + 96, h.refcount_order);
    store_be32(p + 100, header_length);
    p[104] = h.compression_type;
    if (!h.unknown_fields.empty()) {
      std::memcpy(p + kV3HeaderLength, h.unknown_fields.data(), h.unknown_fields.size());
    }
  }
  if (!h.backing_format.empty()) {
    put_extension(
        out, kExtBackingFormat,
        {reinterpret_cast<const uint8_t*>(h.backing_format.data()), h.backing_format.size()});
  }
  if (!h.data_file.empty()) {
    put_extension(out, kExtDataFile,
                  {reinterpret_cast<const uint8_t*>(h.data_file.data()), h.data_file.size()});
  }
  if (const auto* e = h.find_extension(kExtCryptoHeader))
    put_extension(out, kExtCryptoHeader, e->data);
  if (v3 && cs > 4096)
    put_extension(out, kExtFeatureTable, feature_table_bytes(default_feature_names()));
  if (const auto* e = h.find_extension(kExtBitmaps)) put_extension(out, kExtBitmaps, e->data);
  for (const auto& e : h.extensions) {
    if (e.type != kExtCryptoHeader && e.type != kExtBitmaps) {
      put_extension(out, e.type, e.data);
    }
  }
  put_extension(out, kExtEnd, {});
  if (!h.backing_file.empty()) {
    store_be64(out.data() + 8, out.size());
    store_be32(out.data() + 16, uint32_t(h.backing_file.size()));
    out.insert(out.end(), h.backing_file.begin(), h.backing_file.end());
  }
  if (out.size() > cs) return Error{ENOSPC, "No space left in the file header"};
  return out;
}

}  // namespace strata::qcow2
