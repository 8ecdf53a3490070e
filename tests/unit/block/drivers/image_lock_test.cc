// Image locks against QEMU's own tools: what Strata holds, qemu-img and
// qemu-io must respect, and the other way round.
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <fstream>

#include "block/core/graph.h"
#include "strata/drive.h"
#include "unit/block/drivers/temp_dir.h"

extern char** environ;

namespace strata {
namespace {

struct CommandResult {
  int status;
  std::string output;
};

// Runs a shell command, capturing stdout and stderr together.
CommandResult run_command(const std::string& cmd) {
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  std::string out;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

// qemu-io running interactively, holding an image open until quit().
class QemuIoSession {
 public:
  explicit QemuIoSession(const std::string& image) {
    int in[2], out[2];
    EXPECT_EQ(pipe(in), 0);
    EXPECT_EQ(pipe(out), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, out[1], 2);
    std::vector<std::string> args = {"qemu-io", "-f", "raw", image};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    EXPECT_EQ(posix_spawnp(&pid_, "qemu-io", &fa, nullptr, argv.data(), environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    close(in[0]);
    close(out[1]);
    to_ = in[1];
    from_ = out[0];
  }
  // Sends a command and reads until its answer has arrived.
  std::string command(const std::string& cmd, const std::string& until) {
    std::string line = cmd + "\n";
    EXPECT_EQ(write(to_, line.data(), line.size()), static_cast<ssize_t>(line.size()));
    std::string out;
    char c;
    while (out.find(until) == std::string::npos && read(from_, &c, 1) == 1) out += c;
    return out;
  }
  void quit() {
    if (pid_ <= 0) return;
    (void)!write(to_, "quit\n", 5);
    close(to_);
    int status;
    waitpid(pid_, &status, 0);
    close(from_);
    pid_ = -1;
  }
  ~QemuIoSession() { quit(); }

 private:
  pid_t pid_ = -1;
  int to_ = -1, from_ = -1;
};

class ImageLockTest : public ::testing::Test {
 protected:
  void SetUp() override {
    image_ = dir_.file("disk.raw");
    std::ofstream(image_).close();
    truncate(image_.c_str(), 1 << 20);
  }
  nlohmann::json options() const {
    return {{"driver", "raw"}, {"file", {{"driver", "file"}, {"filename", image_}}}};
  }
  testing::TempDir dir_;
  std::string image_;
  Engine engine_;
};

TEST_F(ImageLockTest, QemuToolsAreRefusedWhileStrataHoldsTheImageWritable) {
  auto d = engine_.run(Drive::co_open(engine_, options(), {.writable = true}));
  ASSERT_TRUE(d) << d.error().message;

  auto io = run_command("qemu-io -f raw -c 'write -P 0x11 0 4k' " + image_);
  EXPECT_NE(io.output.find("Failed to get \"write\" lock"), std::string::npos) << io.output;
  auto img = run_command("qemu-img resize -f raw " + image_ + " 2M");
  EXPECT_NE(img.status, 0);
  EXPECT_NE(img.output.find("lock"), std::string::npos) << img.output;

  // A raw format node passes its users' permissions straight down, so a
  // metadata-only open (qemu-img info) is allowed, exactly as against QEMU.
  auto info = run_command("qemu-img info -f raw " + image_);
  EXPECT_EQ(info.status, 0) << info.output;

  (*d)->close();
  io = run_command("qemu-io -f raw -c 'write -P 0x11 0 4k' " + image_);
  EXPECT_EQ(io.output.find("lock"), std::string::npos) << io.output;
}

// A qcow2 format node that writes does not share write on its file (its
// metadata would change under a reader), so even a metadata-only open by
// qemu-img info is refused, and -U (force-share) is the way around it.
TEST_F(ImageLockTest, QemuImgInfoIsRefusedOnAQcow2ImageStrataHoldsWritable) {
  std::string qcow2 = dir_.file("disk.qcow2");
  auto created = run_command("qemu-img create -q -f qcow2 " + qcow2 + " 4M");
  ASSERT_EQ(created.status, 0) << created.output;
  nlohmann::json opts = {{"driver", "qcow2"}, {"file", {{"driver", "file"}, {"filename", qcow2}}}};
  auto d = engine_.run(Drive::co_open(engine_, opts, {.writable = true}));
  ASSERT_TRUE(d) << d.error().message;

  auto info = run_command("qemu-img info " + qcow2);
  EXPECT_NE(info.status, 0) << info.output;
  EXPECT_NE(info.output.find("Failed to get shared \"write\" lock"), std::string::npos)
      << info.output;
  auto shared = run_command("qemu-img info -U " + qcow2);
  EXPECT_EQ(shared.status, 0) << shared.output;
  EXPECT_NE(shared.output.find("file format: qcow2"), std::string::npos) << shared.output;
  auto io = run_command("qemu-io -c 'write -P 0x22 0 64k' " + qcow2);
  EXPECT_NE(io.output.find("lock"), std::string::npos) << io.output;

  (*d)->close();
  info = run_command("qemu-img info " + qcow2);
  EXPECT_EQ(info.status, 0) << info.output;
}

TEST_F(ImageLockTest, StrataIsRefusedWhileQemuIoHoldsTheImage) {
  QemuIoSession qemu_io(image_);
  std::string answer = qemu_io.command("length", "MiB");
  ASSERT_NE(answer.find("1 MiB"), std::string::npos) << answer;

  auto writer = engine_.run(Drive::co_open(engine_, options(), {.writable = true}));
  ASSERT_FALSE(writer);
  // qemu-io holds write and shares it; Strata's writer refuses to share
  // write, so the shared-write byte is what fails, as it would for QEMU.
  EXPECT_NE(writer.error().message.find("Failed to get shared \"write\" lock"), std::string::npos)
      << writer.error().message;
  EXPECT_NE(writer.error().message.find(image_), std::string::npos);
  EXPECT_TRUE(engine_.graph().nodes().empty());

  // force-share on a read-only node works as with QEMU's -U.
  nlohmann::json ro = options();
  ro["read-only"] = true;
  ro["force-share"] = true;
  auto reader = engine_.run(Drive::co_open(engine_, ro, {.writable = false, .share_rw = true}));
  ASSERT_TRUE(reader) << reader.error().message;
  (*reader)->close();

  qemu_io.quit();
  auto now = engine_.run(Drive::co_open(engine_, options(), {.writable = true}));
  ASSERT_TRUE(now) << now.error().message;
  (*now)->close();
}

}  // namespace
}  // namespace strata
