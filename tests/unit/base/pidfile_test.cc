// Pid files: mode, content, the lock another process runs into, removal.
#include "base/pidfile.h"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace strata {
namespace {

std::string temp_path(const char* name) {
  return (std::filesystem::temp_directory_path() /
          (std::string(name) + "-" + std::to_string(::getpid())))
      .string();
}

std::string contents(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

TEST(PidFileTest, WritesThePidWithMode0600OverOldContent) {
  std::string path = temp_path("strata-pid");
  std::ofstream(path) << "a much longer line than any pid\n";
  auto pid = PidFile::create(path);
  ASSERT_TRUE(pid) << pid.error().message;
  EXPECT_EQ(contents(path), std::to_string(::getpid()) + "\n");
  pid->remove();
  EXPECT_FALSE(std::filesystem::exists(path));

  mode_t old_umask = ::umask(0);  // a new file is 0600 even with no umask
  auto fresh = PidFile::create(path);
  ::umask(old_umask);
  ASSERT_TRUE(fresh) << fresh.error().message;
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  fresh->remove();
}

// What another process gets while this one holds the file: QEMU's message,
// and the file unchanged.
TEST(PidFileTest, AnotherProcessIsRefusedWhileTheFileIsHeld) {
  std::string path = temp_path("strata-pid-lock");
  auto held = PidFile::create(path);
  ASSERT_TRUE(held) << held.error().message;
  std::string report = temp_path("strata-pid-report");
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto second = PidFile::create(path);
    std::ofstream(report) << (second ? std::string("created") : second.error().message);
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_EQ(contents(report), "Cannot lock pid file: Resource temporarily unavailable");
  EXPECT_EQ(contents(path), std::to_string(::getpid()) + "\n");
  std::filesystem::remove(report);
  held->remove();
  // Released: a new owner gets it.
  auto again = PidFile::create(path);
  EXPECT_TRUE(again);
  again->remove();
}

TEST(PidFileTest, AFileThatCannotBeCreatedIsReportedAsQemuDoes) {
  auto r = PidFile::create("/nonexistent-dir/x.pid");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message,
            "Could not create '/nonexistent-dir/x.pid': No such file or directory");
}

}  // namespace
}  // namespace strata
