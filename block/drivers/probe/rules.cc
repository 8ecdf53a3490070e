// QEMU 7.2's probe rules, one per format, learned from each driver's
// bdrv_probe (block/*.c) and written here from their description.
#include <algorithm>
#include <cstring>

#include "block/drivers/bytes.h"
#include "block/drivers/probe/probe.h"

namespace strata::probe {

namespace {

using Head = std::span<const uint8_t>;

bool starts_with(Head h, size_t at, std::string_view s) {
  return h.size() >= at + s.size() && std::memcmp(h.data() + at, s.data(), s.size()) == 0;
}

// The C string at `at` equals `s` (strcmp on a field, as QEMU compares them).
bool c_string_is(Head h, size_t at, std::string_view s) {
  return starts_with(h, at, s) && h.size() > at + s.size() && h[at + s.size()] == 0;
}

constexpr uint32_t kQcowMagic = 0x514649FB;  // "QFI\xfb", big-endian

int qcow2_score(Head h) {
  return bytes::be32(h.data()) == kQcowMagic && bytes::be32(h.data() + 4) >= 2 ? 100 : 0;
}

int qcow_score(Head h) {
  return bytes::be32(h.data()) == kQcowMagic && bytes::be32(h.data() + 4) == 1 ? 100 : 0;
}

int qed_score(Head h) {
  return starts_with(h, 0, std::string_view("QED\0", 4)) ? 100 : 0;
}

// A text descriptor: comment lines ('#'), lines of spaces (optionally
// ending in "\r"), then "version=1".."version=3" ending its line; an empty
// line or anything else first is not a descriptor.
bool vmdk_descriptor_text(Head h) {
  size_t p = 0;
  while (p < h.size()) {
    if (h[p] == '#') {
      while (p < h.size() && h[p] != '\n') p++;
      p++;
      continue;
    }
    if (h[p] == ' ') {
      while (p < h.size() && h[p] == ' ') p++;
      if (p < h.size() && h[p] == '\r') p++;
      if (p == h.size() || h[p] != '\n') return false;
      p++;
      continue;
    }
    for (char v : {'1', '2', '3'}) {
      std::string line = std::string("version=") + v;
      if (starts_with(h, p, line + "\n") || starts_with(h, p, line + "\r\n")) return true;
    }
    return false;
  }
  return false;
}

int vmdk_score(Head h) {
  uint32_t magic = bytes::be32(h.data());
  if (magic == 0x434F5744 /* "COWD" */ || magic == 0x4B444D56 /* "KDMV" */) return 100;
  return vmdk_descriptor_text(h) ? 100 : 0;
}

int vpc_score(Head h) {
  return starts_with(h, 0, "conectix") ? 100 : 0;
}

int vhdx_score(Head h) {
  return starts_with(h, 0, "vhdxfile") ? 100 : 0;
}

int vdi_score(Head h) {
  return bytes::le32(h.data() + 0x40) == 0xbeda107f ? 100 : 0;
}

// LUKS version 1 only: QEMU 7.2 does not probe LUKS2.
int luks_score(Head h) {
  return starts_with(h, 0, "LUKS\xba\xbe") && bytes::be16(h.data() + 6) == 1 ? 100 : 0;
}

int parallels_score(Head h) {
  bool magic = starts_with(h, 0, "WithoutFreeSpace") || starts_with(h, 0, "WithouFreSpacExt");
  return magic && bytes::le32(h.data() + 16) == 2 ? 100 : 0;
}

int bochs_score(Head h) {
  uint32_t version = bytes::le32(h.data() + 64);
  bool ok = c_string_is(h, 0, "Bochs Virtual HD Image") && c_string_is(h, 32, "Redolog") &&
            c_string_is(h, 48, "Growing") && (version == 0x00020000 || version == 0x00010000);
  return ok ? 100 : 0;
}

int cloop_score(Head h) {
  return starts_with(h, 0,
                     "#!/bin/sh\n#V2.0 Format\n"
                     "modprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n")
             ? 2
             : 0;
}

int dmg_score(std::string_view filename) {
  return filename.size() > 4 && filename.substr(filename.size() - 4) == ".dmg" ? 2 : 0;
}

}  // namespace

const std::vector<std::string>& known_formats() {
  static const std::vector<std::string> formats = {"qcow2", "qcow", "qed",  "vmdk",      "vpc",
                                                   "vhdx",  "vdi",  "luks", "parallels", "bochs",
                                                   "cloop", "dmg",  "raw"};
  return formats;
}

int score(std::string_view format, Head h, std::string_view filename) {
  if (h.size() < kHeadBytes) return 0;
  if (format == "qcow2") return qcow2_score(h);
  if (format == "qcow") return qcow_score(h);
  if (format == "qed") return qed_score(h);
  if (format == "vmdk") return vmdk_score(h);
  if (format == "vpc") return vpc_score(h);
  if (format == "vhdx") return vhdx_score(h);
  if (format == "vdi") return vdi_score(h);
  if (format == "luks") return luks_score(h);
  if (format == "parallels") return parallels_score(h);
  if (format == "bochs") return bochs_score(h);
  if (format == "cloop") return cloop_score(h);
  if (format == "dmg") return dmg_score(filename);
  if (format == "raw") return 1;
  return 0;
}

std::string probe_head(Head head, std::string_view filename) {
  std::vector<uint8_t> buf(kHeadBytes, 0);
  std::copy_n(head.begin(), std::min(head.size(), kHeadBytes), buf.begin());
  std::string best = "raw";
  int best_score = 0;
  for (const auto& f : known_formats()) {
    int s = score(f, buf, filename);
    if (s > best_score) {
      best_score = s;
      best = f;
    }
  }
  return best;
}

bool is_vhd_footer(Head sector) {
  if (sector.size() < kVhdFooterBytes || !starts_with(sector, 0, "conectix")) return false;
  // One's complement of the byte sum, the checksum field (64..67) as zero.
  uint32_t sum = 0;
  for (size_t i = 0; i < kVhdFooterBytes; i++) {
    if (i < 64 || i >= 68) sum += sector[i];
  }
  return ~sum == bytes::be32(sector.data() + 64);
}

Error unsupported_format(const std::string& path, const std::string& format) {
  return Error{ENOTSUP, "Could not open '" + path + "': image format '" + format +
                            "' is not supported by Strata"};
}

}  // namespace strata::probe
