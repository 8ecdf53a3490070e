// Shared helpers of strata-img subcommands: option parsing, opening images,
// qemu-img style size formatting and error reporting.
// Thread rules: the tool is single-threaded; everything runs on the engine's
// loop through Engine::run.
#pragma once

#include <getopt.h>

#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "block/core/node.h"
#include "strata/drive.h"
#include "strata/engine.h"

namespace strata::img {

// The argument list of one subcommand (argv[0] is the subcommand name).
using Args = std::vector<std::string>;

// Whether QEMU has a block driver by this name (formats and protocols);
// Strata may not implement it, which gets another message than an unknown
// name.
bool qemu_driver_name(const std::string& name);
// Prints "strata-img: MESSAGE" to stderr.
void error_report(const std::string& message);
// A usage error as qemu-img's error_exit reports it: the message, then
// "Try 'strata-img --help' for more information". Returns the exit status (1).
int usage_error(const std::string& message);
// qemu's size_to_str: "64 MiB", "1.26 MiB", "324 KiB".
std::string size_to_str(uint64_t bytes);
// Parses "-o a=b,c=d" option strings (",," escapes a comma); merges into `out`.
bool parse_option_string(const std::string& s, std::map<std::string, std::string>* out);
// Sizes as QEMU's qemu_strtosz reads them: a decimal number with an optional
// fraction, or 0x-prefixed hex without one, then an optional suffix (b/B
// bytes, k K M G T P E in powers of 1024). A fraction needs a suffix other
// than bytes; exponents and signs are refused; the result is rounded to
// the nearest byte.
enum class SizeParse { kOk, kInvalid, kRange };
SizeParse parse_qemu_size(const std::string& s, uint64_t* out);
// qemu-img's cvtnum: a size for `name` ("image size", "start offset", ...)
// in [0, max], with qemu-img's two messages on failure.
bool cvtnum(const std::string& name, const std::string& value, uint64_t* out,
            uint64_t max = INT64_MAX);

struct OpenSpec {
  std::string filename;
  std::string format;  // empty: probe
  bool writable = false;
  bool no_backing = false;    // -U style backing suppression (backing: null)
  bool force_share = false;   // -U
  bool image_opts = false;    // filename is a JSON/dotted option string
  bool check_mode = false;    // open corrupt images writable for repair
  bool no_data_file = false;  // qcow2: metadata only, the external data file left closed
  std::string cache;          // -t: "none", "writeback", "unsafe", ...
  bool unmap = false;         // discard=unmap (zero writes may punch holes)
};

// Blockdev options for an image named on the command line.
Task<Result<nlohmann::json>> co_image_options(Engine& engine, OpenSpec spec);
Task<Result<std::unique_ptr<Drive>>> co_open_image(Engine& engine, OpenSpec spec);
// The nodes of the backing chain from `top` down (formats only).
std::vector<Node*> backing_chain(Node* top);
// The file name of a node as qemu-img prints it.
std::string node_filename(Node* node);
// Format of a node ("qcow2", "raw").
std::string node_format(Node* node);

// Block status through a backing chain, as qemu-img map reports it.
struct ChainStatus {
  uint64_t bytes = 0;
  bool data = false;
  bool zero = false;
  bool present = false;  // allocated in some layer
  int depth = 0;         // layer that decided (or the last layer)
  bool has_offset = false;
  uint64_t offset = 0;
  Node* map_node = nullptr;
};
// Status of [offset, offset + bytes) of `top`, looking down to `base`
// (exclusive; null means the whole chain).
Task<Result<ChainStatus>> co_chain_status(Node* top, uint64_t offset, uint64_t bytes,
                                          Node* base = nullptr);

// Status of [offset, offset + bytes) of `top` read through its backing
// chain down to `base` (exclusive; null: the whole chain), as QEMU's
// bdrv_block_status_above: the answer of the first layer that allocates
// the range (kStatusAllocated), or of the bottom layer, with kStatusEof
// when the range reaches the end of `top`. A layer past its backing
// file's end reads zeroes; a layer shorter than the range above it is
// taken as allocated zeroes.
Task<Result<BlockStatus>> co_status_above(Node* top, uint64_t offset, uint64_t bytes,
                                          Node* base = nullptr);

// Progress line for -p: "    (45.00/100%)" redrawn in place, with
// qemu-progress's rule (in single precision, as QEMU): a value is printed
// when it is 0 or 100 or has moved more than `min_skip` points since the
// last one printed. finish() ends the line.
class Progress {
 public:
  explicit Progress(bool enabled, float min_skip = 1.0f) : enabled_(enabled), min_skip_(min_skip) {}
  // Sets the value to `percent`.
  void update(double percent) { print(float(percent), 0); }
  // Adds `delta` percent.
  void advance(float delta) { print(delta, 100); }
  void finish();

 private:
  void print(float delta, int max);
  bool enabled_;
  float min_skip_;
  float current_ = 0;
  float last_print_ = 0;
};

// -r RATE (convert, commit): before writing `bytes`, waits until the
// average since the first write stays at or under the limit. No limit
// when the rate is 0.
class RateLimit {
 public:
  RateLimit(Loop& loop, uint64_t bytes_per_second) : loop_(loop), rate_(bytes_per_second) {}
  Task<void> co_account(uint64_t bytes);

 private:
  Loop& loop_;
  uint64_t rate_;
  uint64_t start_ns_ = 0;
  uint64_t bytes_ = 0;
};

// Subcommands; each returns the process exit status.
int cmd_create(Engine& engine, const Args& args);
int cmd_info(Engine& engine, const Args& args);
int cmd_check(Engine& engine, const Args& args);
int cmd_map(Engine& engine, const Args& args);
int cmd_compare(Engine& engine, const Args& args);
int cmd_convert(Engine& engine, const Args& args);
int cmd_resize(Engine& engine, const Args& args);
int cmd_snapshot(Engine& engine, const Args& args);
int cmd_commit(Engine& engine, const Args& args);
int cmd_rebase(Engine& engine, const Args& args);
int cmd_amend(Engine& engine, const Args& args);
int cmd_measure(Engine& engine, const Args& args);

// Options shared by the subcommands: -f FMT, -U, -q, -t CACHE,
// --image-opts, --object (accepted and ignored: no secrets or throttle
// groups are needed offline), --output=human|json, --force-share. Which of
// the short ones a subcommand takes is its getopt string; which of the long
// ones, the CommonLongOption set it passes to long_options().
enum CommonOption : int { kOptImageOpts = 0x1000, kOptObject, kOptOutput, kOptFirstOwn };
struct CommonOptions {
  OpenSpec spec;
  bool quiet = false;
  bool json = false;  // --output=json
};
enum class OptionUse { kHandled, kNotCommon, kError };
// Applies option `c` (as returned by OptionParser::next) when it is one of
// the common ones; kError after printing qemu-img's message.
OptionUse handle_common_option(int c, const std::string& arg, CommonOptions* out);
// The common long options, as qemu-img's sets differ per subcommand
// (snapshot has no --output, create only --object, ...).
enum CommonLongOption : unsigned {
  kLongFormat = 1u << 0,  // --format, as -f
  kLongImageOpts = 1u << 1,
  kLongObject = 1u << 2,
  kLongOutput = 1u << 3,
  kLongForceShare = 1u << 4,  // as -U
};
// --help, the common long options in `common` (CommonLongOption bits), then
// `own` (which must not repeat them), then the terminating entry.
std::vector<struct option> long_options(unsigned common, std::initializer_list<struct option> own);

// getopt_long over an Args list.
struct OptionParser {
  OptionParser(const Args& args, const char* shortopts, const struct option* longopts);
  // Returns the next option character, -1 at the end, '?' on an unknown
  // option or a missing argument (after printing qemu-img's message and
  // "Try ... --help" line).
  int next();
  std::string arg;                // the option's argument
  std::vector<std::string> rest;  // positional arguments, after next() returned -1

 private:
  std::vector<std::string> storage_;
  std::vector<char*> argv_;
  std::string shortopts_;
  const struct option* longopts_;
};

}  // namespace strata::img
