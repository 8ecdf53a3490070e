// Format probing: which format driver opens an image named without one.
//
// Contract: probe_head() applies QEMU 7.2's probe of every format QEMU
// probes (qcow2, qcow, qed, vmdk, vpc, vhdx, vdi, luks, parallels, bochs,
// cloop, dmg, raw) to the first kHeadBytes of an image, zero-padded when the
// image is shorter, with QEMU's scores: the highest score wins and raw, at 1,
// wins only when nothing else matches. co_probe_file() adds one rule QEMU
// does not have: an image QEMU would call raw whose last sector is a valid
// VHD footer (a fixed VHD, which has no header) is "vpc", so its footer is
// never copied as guest data. co_probe_driver() then refuses a probed format
// Strata has no driver for, naming it, instead of reading it as raw. An
// empty file is raw, as in QEMU.
// Thread rules: the pure functions anywhere; co_* on the loop thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/loop.h"
#include "block/core/driver_registry.h"
#include "strata/result.h"

namespace strata::probe {

// QEMU's BLOCK_PROBE_BUF_SIZE.
constexpr size_t kHeadBytes = 512;
// A VHD footer.
constexpr size_t kVhdFooterBytes = 512;

// The score format `format` gives `head` (exactly kHeadBytes), as its QEMU
// driver's probe: 0 when it is not that format, 100 for a magic number, 2
// for the weak rules (cloop's script header, dmg's file name), 1 for raw.
int score(std::string_view format, std::span<const uint8_t> head, std::string_view filename);
// The formats the prober knows, in the order ties are broken.
const std::vector<std::string>& known_formats();
// The format QEMU's probe picks for `head` (any length; zero-padded or cut
// to kHeadBytes) of an image named `filename`.
std::string probe_head(std::span<const uint8_t> head, std::string_view filename);
// True for a VHD footer: creator "conectix" and a correct checksum.
bool is_vhd_footer(std::span<const uint8_t> sector);

// Probes the image file `path`: its head, and its last sector when the head
// alone says raw. Errors name the file as qemu-img does.
Task<Result<std::string>> co_probe_file(Loop& loop, std::string path);
// co_probe_file(), then the driver to open it with: a format `drivers`
// does not have fails with "Could not open 'PATH': image format 'F' is not
// supported by Strata" (ENOTSUP).
Task<Result<std::string>> co_probe_driver(Loop& loop, const DriverRegistry& drivers,
                                          std::string path);
// The error co_probe_driver() gives for a probed format without a driver.
Error unsupported_format(const std::string& path, const std::string& format);

}  // namespace strata::probe
