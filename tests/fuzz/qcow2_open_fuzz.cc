// Fuzz target: the bytes of a qcow2 image file, opened by the qcow2 driver
// (read-only, then read-write), read, block-status-queried and checked.
// Whatever the input, each step must answer with a result or a clean error
// (with a message), never crash, hang or allocate without bound, and the
// graph must be empty after closing. The input goes through a private
// temporary file; backing files are never opened (backing: null), and an
// image with the external data file bit gets a private temporary data file
// (data-file), never the file its header names.
#include <fcntl.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "block/core/graph.h"
#include "block/drivers/qcow2/check.h"
#include "block/drivers/qcow2/qcow2.h"
#include "strata/drive.h"
#include "strata/engine.h"

namespace {

constexpr size_t kMaxInput = 4 << 20;

std::string write_temp(const uint8_t* data, size_t size) {
  const char* dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  std::string path = std::string(dir) + "/strata-qcow2-fuzz-XXXXXX";
  int fd = mkstemp(path.data());
  if (fd < 0) std::abort();
  for (size_t done = 0; done < size;) {
    ssize_t n = write(fd, data + done, size - done);
    if (n <= 0) std::abort();
    done += size_t(n);
  }
  close(fd);
  return path;
}

void exercise(strata::Engine& engine, strata::Node* node) {
  std::vector<uint8_t> buf(64 * 1024);
  uint64_t size = node->size();
  for (uint64_t off : {uint64_t(0), size / 2, size > buf.size() ? size - buf.size() : 0}) {
    uint64_t len = std::min<uint64_t>(buf.size(), size - std::min(size, off));
    if (len == 0) continue;
    auto r = engine.run(node->co_preadv(off, strata::IoVec(buf.data(), len), 0));
    if (!r && r.error().message.empty()) __builtin_trap();
    auto st = engine.run(node->co_block_status(off, len, nullptr));
    if (!st && st.error().message.empty()) __builtin_trap();
  }
  auto* q = dynamic_cast<strata::qcow2::Qcow2Driver*>(&node->driver());
  if (q) (void)engine.run(strata::qcow2::co_check(*q, 0));
}

void open_once(const std::string& path, const std::string& data_file, bool writable) {
  strata::Engine engine;
  nlohmann::json options = {{"driver", "qcow2"},
                            {"backing", nullptr},
                            {"file", {{"driver", "file"}, {"filename", path}}}};
  if (!data_file.empty()) options["data-file"] = {{"driver", "file"}, {"filename", data_file}};
  strata::DriveOptions drive_options;
  drive_options.writable = writable;
  auto drive = engine.run(strata::Drive::co_open(engine, options, drive_options));
  if (drive) {
    exercise(engine, (*drive)->edge()->node());
    if (writable) {
      std::vector<uint8_t> data(4096, 0x5a);
      for (uint64_t off : {uint64_t(0), (*drive)->size() / 3}) {
        if (off + data.size() > (*drive)->size()) continue;
        auto r = engine.run((*drive)->co_write(off, data));
        if (!r && r.error().message.empty()) __builtin_trap();
      }
      (void)engine.run((*drive)->co_flush());
    }
    engine.run((*drive)->co_close());
  } else if (drive.error().message.empty()) {
    __builtin_trap();  // every refusal explains itself
  }
  engine.run(engine.co_close_all());
  if (!engine.graph().nodes().empty()) __builtin_trap();
}

}  // namespace

// Whether the input is a v3 header with the external data file bit.
bool wants_data_file(const uint8_t* data, size_t size) {
  return size >= 80 && data[4] == 0 && data[5] == 0 && data[6] == 0 && data[7] == 3 &&
         (data[79] & 4);
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > kMaxInput) return 0;
  std::string path = write_temp(data, size);
  std::string data_file;
  if (wants_data_file(data, size)) {
    std::vector<uint8_t> zeroes(1 << 20, 0);
    data_file = write_temp(zeroes.data(), zeroes.size());
  }
  open_once(path, data_file, false);
  open_once(path, data_file, true);
  unlink(path.c_str());
  if (!data_file.empty()) unlink(data_file.c_str());
  return 0;
}
