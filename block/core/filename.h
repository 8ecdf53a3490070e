// File names to node options: the one place where a file name given on a
// command line, in a QMP argument or in an image header (a backing file)
// becomes blockdev options, as QEMU's bdrv_open makes them.
//
// Contract:
// - "json:{...}" is QEMU's pseudo-protocol: the object's members are the
//   node's options; dotted keys ("file.filename") nest, and a `file` child
//   with a `filename` but no `driver` is a `file` node.
// - "NAME:..." where NAME comes before any '/' names a protocol (QEMU's
//   path_has_protocol): the driver registered for protocol NAME parses the
//   name into its options (nbd: server/export from nbd://, nbd+unix://,
//   nbd:unix:...; file: strips "file:"; null-co: only "null-co://"). An
//   unregistered NAME is "Unknown protocol 'NAME'"; a local file whose name
//   has a colon before its first '/' is written "./a:b" or "file:a:b".
// - anything else is a `file` node.
// - A format given with the name is the node's driver above that protocol
//   node; a format naming a protocol driver opens that driver directly.
//   Without a format, a local file is probed; any other protocol is raw
//   (a deliberate difference: QEMU probes over the connection too). A
//   format found without being given and found raw gets `x-probed`.
// - Relative backing file names are resolved against the overlay's
//   directory as QEMU's bdrv_make_absolute_filename does; names with a
//   protocol (URIs, json:) and absolute paths are used as they are.
// Errors carry QEMU's messages; no I/O happens except the probe.
// Thread rules: pure functions, except co_filename_options, which runs on the
// loop thread.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "base/loop.h"
#include "block/core/driver_registry.h"
#include "strata/result.h"
#include "strata/task.h"

namespace strata {

// True if `name` starts with "PROTO:" (a colon before any '/').
bool path_has_protocol(std::string_view name);

// The options of the node a bare file name stands for: the json: object,
// the protocol node ({"driver": "nbd", "server": ..., "export": ...}) or
// {"driver": "file", "filename": name}.
Result<nlohmann::json> filename_node_options(const DriverRegistry& drivers,
                                             const std::string& filename);

// Node options for the image `filename` opened with `format` (empty:
// probed as above): {"driver": format, "file": <protocol node>}, or the
// json: object with `format` as its driver.
Task<Result<nlohmann::json>> co_filename_options(Loop& loop, const DriverRegistry& drivers,
                                                 std::string filename, std::string format);

// QEMU's path_combine: `name` relative to the directory part of `base`
// (after its protocol prefix, if any); an absolute `name` is returned as is.
std::string path_combine(const std::string& base, const std::string& name);

// The name to open for backing file `backing` of an image whose own file
// name is `overlay` (QEMU's bdrv_make_absolute_filename with the overlay's
// directory). Empty `backing` gives "".
Result<std::string> backing_filename(const std::string& overlay, const std::string& backing);

}  // namespace strata
