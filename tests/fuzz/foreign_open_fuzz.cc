// Fuzz target: the bytes of an image file, probed, then opened read-only by
// each of the read-only format drivers (vmdk, vpc, vdi), read,
// block-status-queried and checked. Whatever the input, each step must
// answer with a result or a clean error (with a message), never crash, hang
// or allocate without bound, and the graph must be empty after closing. The
// input goes through a file in a private temporary directory; parent images
// are never opened (backing: null). A descriptor's extent files resolve in
// that directory: to the image itself ("image"), or to nothing.
#include <fcntl.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "block/core/graph.h"
#include "block/drivers/probe/probe.h"
#include "block/drivers/vdi/check.h"
#include "block/drivers/vmdk/check.h"
#include "strata/drive.h"
#include "strata/engine.h"

namespace {

constexpr size_t kMaxInput = 4 << 20;

// The input as the file "image" in a private directory, so a descriptor's
// extents resolve there (to the image itself, or to nothing).
std::string write_temp(const uint8_t* data, size_t size) {
  const char* base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  std::string dir = std::string(base) + "/strata-foreign-fuzz-XXXXXX";
  if (!mkdtemp(dir.data())) std::abort();
  std::string path = dir + "/image";
  int fd = open(path.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0600);
  if (fd < 0) std::abort();
  for (size_t done = 0; done < size;) {
    ssize_t n = write(fd, data + done, size - done);
    if (n <= 0) std::abort();
    done += size_t(n);
  }
  close(fd);
  return path;
}

void check_result(const strata::Result<void>& r) {
  if (!r && r.error().message.empty()) __builtin_trap();
}

void exercise(strata::Engine& engine, strata::Node* node) {
  std::vector<uint8_t> buf(64 * 1024);
  uint64_t size = node->size();
  for (uint64_t off : {uint64_t(0), size / 2, size > buf.size() ? size - buf.size() : 0}) {
    uint64_t len = std::min<uint64_t>(buf.size(), size - std::min(size, off));
    if (len == 0) continue;
    check_result(engine.run(node->co_preadv(off, strata::IoVec(buf.data(), len), 0)));
    auto st = engine.run(node->co_block_status(off, len, nullptr));
    if (!st && st.error().message.empty()) __builtin_trap();
  }
  if (auto* v = dynamic_cast<strata::vdi::VdiDriver*>(&node->driver()))
    (void)strata::vdi::check(*v);
  if (auto* v = dynamic_cast<strata::vmdk::VmdkDriver*>(&node->driver())) {
    (void)engine.run(strata::vmdk::co_check(*v));
  }
}

void open_once(const std::string& path, const std::string& driver) {
  strata::Engine engine;
  nlohmann::json options = {
      {"driver", driver}, {"read-only", true}, {"file", {{"driver", "file"}, {"filename", path}}}};
  if (driver == "vmdk") options["backing"] = nullptr;
  auto drive = engine.run(strata::Drive::co_open(engine, options, strata::DriveOptions{}));
  if (drive) {
    exercise(engine, (*drive)->edge()->node());
    engine.run((*drive)->co_close());
  } else if (drive.error().message.empty()) {
    __builtin_trap();  // every refusal explains itself
  }
  engine.run(engine.co_close_all());
  if (!engine.graph().nodes().empty()) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > kMaxInput) return 0;
  (void)strata::probe::probe_head({data, size}, "input.dmg");
  std::string path = write_temp(data, size);
  {
    strata::Engine engine;
    auto r = engine.run(strata::probe::co_probe_file(engine.loop(), path));
    if (!r && r.error().message.empty()) __builtin_trap();
  }
  for (const char* driver : {"vmdk", "vpc", "vdi"}) open_once(path, driver);
  unlink(path.c_str());
  rmdir(path.substr(0, path.rfind('/')).c_str());
  return 0;
}
