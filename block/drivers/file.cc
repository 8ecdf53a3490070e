// file: a POSIX regular file (or block device) as a protocol node.
//
// Reads, writes, flushes and fallocate go through the loop's io_uring
// (aio=io_uring or native, and the default where the kernel offers it) or
// the thread pool (aio=threads), unless fs::InlineIo allows them on the loop
// thread (small transfers on tmpfs, page-cache hits elsewhere); write-zeroes
// and discard use fallocate, block status uses SEEK_DATA/SEEK_HOLE, and
// image locks use QEMU's OFD lock bytes. With cache.direct the file is
// opened O_DIRECT and requests are aligned to 4 KiB (buffers too).
// Splice reads move page-cache (or tmpfs) pages into the pipe without a
// copy (fs::co_splice_to_pipe); with cache.direct they answer ENOTSUP, so
// the caller reads through co_preadv and the cache stays bypassed.
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cstring>

#include "base/fs.h"
#include "block/core/graph.h"
#include "block/core/image_lock.h"

namespace strata {

namespace {

constexpr uint32_t kDirectAlignment = 4096;

class FileDriver final : public Driver {
 public:
  ~FileDriver() override {
    if (fd_ >= 0) ::close(fd_);
    if (reopen_fd_ >= 0) ::close(reopen_fd_);
  }

  Task<Result<void>> co_open(OpenContext& ctx) override;
  Task<void> co_close() override;
  Task<Result<void>> co_preadv(uint64_t offset, const IoVec& iov, uint32_t flags) override;
  Task<Result<void>> co_splice_read(uint64_t offset, uint64_t bytes, Pipe& pipe) override;
  Task<Result<void>> co_pwritev(uint64_t offset, const IoVec& iov, uint32_t flags) override;
  Task<Result<void>> co_pwrite_zeroes(uint64_t offset, uint64_t bytes, uint32_t flags) override;
  Task<Result<void>> co_pdiscard(uint64_t offset, uint64_t bytes) override;
  Task<Result<void>> co_flush() override;
  Task<Result<BlockStatus>> co_block_status(uint64_t offset, uint64_t bytes) override;
  Task<Result<void>> co_truncate(uint64_t size, bool exact, Preallocation prealloc) override;
  // A regular file's length rounded up to whole 512-byte sectors, as
  // QEMU's block layer counts it (the tail past the end reads as zeroes).
  uint64_t size() const override {
    return is_block_device_ ? size_ : (size_ + 511) & ~uint64_t(511);
  }
  Limits limits() const override;
  Result<void> check_perm(uint64_t perm, uint64_t shared) override;
  void set_perm(uint64_t perm, uint64_t shared) override;
  // Read-only and cache.direct changes open the file again; the new
  // descriptor takes over the image locks at commit.
  Task<Result<void>> co_reopen_prepare(const NodeFlags& flags) override;
  void reopen_commit() override;
  void reopen_abort() override;
  nlohmann::json format_specific() const override { return nullptr; }
  // Which engine runs the file's I/O: "io_uring" or "threads".
  nlohmann::json block_info_extension() const override {
    return {{"x-aio", inline_io_.ring ? "io_uring" : "threads"}};
  }
  std::string filename() const override { return filename_; }

 private:
  Result<void> pick_engine(const std::string& aio);
  void probe_io();
  bool needs_bounce(const IoVec& iov) const;
  void grow_to(uint64_t end) { size_ = std::max(size_, end); }
  Task<Result<void>> co_extend_to(uint64_t end);

  Loop* loop_ = nullptr;
  std::string filename_;
  int fd_ = -1;
  uint64_t size_ = 0;
  bool direct_ = false;
  fs::InlineIo inline_io_;  // which reads/writes run inline, where the rest go
  IoRing* ring_ = nullptr;  // the loop's io_uring, unless aio=threads or it is missing
  // The last data extent SEEK_HOLE found. Block status inside it needs no
  // syscall: SEEK_HOLE scans the page cache up to the next hole (on tmpfs,
  // the rest of a fully allocated file, for every query). Only data is
  // remembered: writes can only turn holes into data, and "data" stays a
  // correct answer for a range another process punched (it reads as zeroes
  // either way). Our own punches and truncates forget it.
  struct {
    uint64_t start = 0;
    uint64_t end = 0;
  } known_data_;
  bool locking_ = true;
  uint64_t perm_ = 0;  // as last set by set_perm
  uint64_t shared_ = kPermAll;
  int reopen_fd_ = -1;  // between co_reopen_prepare and commit/abort
  bool reopen_direct_ = false;
  bool is_block_device_ = false;
  bool zero_range_works_ = true;
  bool punch_hole_works_ = true;
};

Task<Result<void>> FileDriver::co_open(OpenContext& ctx) {
  loop_ = &ctx.loop();
  const auto& o = ctx.options();
  filename_ = opt_string(o, "filename");
  std::string locking = opt_string(o, "locking", "auto");
  if (locking != "auto" && locking != "on" && locking != "off") {
    co_return Error{EINVAL, "Parameter 'locking' does not accept value '" + locking + "'"};
  }
  locking_ = locking != "off";
  NodeFlags& flags = node().mutable_flags();
  direct_ = flags.cache_direct;
  if (auto r = pick_engine(opt_string(o, "aio")); !r) co_return r;
  int oflags = (flags.read_only ? O_RDONLY : O_RDWR) | (direct_ ? O_DIRECT : 0);
  auto fd = co_await fs::co_open(*loop_, filename_, oflags);
  if (!fd && flags.auto_read_only && !flags.read_only &&
      (fd.error().code == EACCES || fd.error().code == EROFS || fd.error().code == EPERM)) {
    flags.read_only = true;
    fd = co_await fs::co_open(*loop_, filename_, O_RDONLY | (direct_ ? O_DIRECT : 0));
  }
  if (!fd) co_return std::move(fd).error();
  fd_ = *fd;
  probe_io();
  auto st = fs::fstat_now(fd_);
  if (!st) co_return std::move(st).error();
  if (S_ISDIR(st->st_mode)) co_return Error{EISDIR, "'" + filename_ + "' is a directory"};
  is_block_device_ = S_ISBLK(st->st_mode);
  if (is_block_device_) {
    uint64_t bytes = 0;
    if (ioctl(fd_, BLKGETSIZE64, &bytes) != 0) co_return fs::errno_error(errno, "BLKGETSIZE64");
    size_ = bytes;
  } else {
    size_ = static_cast<uint64_t>(st->st_size);
  }
  co_return Result<void>{};
}

// QEMU's aio modes: threads takes the pool; io_uring and native (which
// QEMU runs on Linux AIO, and which wants cache.direct) take the loop's
// io_uring and fail when the kernel refuses it. Without the option the ring
// is used where it works, the pool elsewhere.
Result<void> FileDriver::pick_engine(const std::string& aio) {
  if (!aio.empty() && aio != "threads" && aio != "native" && aio != "io_uring") {
    return Error{EINVAL, "Parameter 'aio' does not accept value '" + aio + "'"};
  }
  if (aio == "native" && !direct_) {
    return Error{EINVAL,
                 "aio=native was specified, but it requires cache.direct=on, which was not "
                 "specified."};
  }
  if (aio == "threads") return {};
  ring_ = loop_->io_ring();
  if (!ring_ && !aio.empty()) {
    return Error{ENOTSUP, "Unable to use " +
                              std::string(aio == "native" ? "native AIO" : "io_uring") + ": " +
                              loop_->io_ring_error()};
  }
  return {};
}

void FileDriver::probe_io() {
  inline_io_ = fs::InlineIo::probe(fd_, direct_);
  inline_io_.ring = ring_;
}

Task<void> FileDriver::co_close() {
  if (fd_ >= 0) {
    int fd = std::exchange(fd_, -1);
    (void)co_await fs::co_close(*loop_, fd);
  }
}

Limits FileDriver::limits() const {
  Limits l;
  l.request_alignment = direct_ ? kDirectAlignment : 1;
  l.max_transfer = 16 << 20;
  return l;
}

bool FileDriver::needs_bounce(const IoVec& iov) const {
  if (!direct_) return false;
  for (const auto& v : iov.entries()) {
    if (reinterpret_cast<uintptr_t>(v.iov_base) % kDirectAlignment ||
        v.iov_len % kDirectAlignment) {
      return true;
    }
  }
  return false;
}

Task<Result<void>> FileDriver::co_preadv(uint64_t offset, const IoVec& iov, uint32_t) {
  if (needs_bounce(iov)) {
    AlignedBuffer bounce(iov.size(), kDirectAlignment);
    auto r = co_await fs::co_preadv(*loop_, fd_, bounce.iov(), offset, &inline_io_);
    if (!r) co_return std::move(r).error();
    iov.copy_from(0, bounce.data(), iov.size());
    co_return Result<void>{};
  }
  auto r = co_await fs::co_preadv(*loop_, fd_, iov, offset, &inline_io_);
  if (!r) co_return std::move(r).error();
  co_return Result<void>{};
}

Task<Result<void>> FileDriver::co_splice_read(uint64_t offset, uint64_t bytes, Pipe& pipe) {
  if (direct_) co_return Error{ENOTSUP, "splice reads bypass cache.direct"};
  co_return co_await fs::co_splice_to_pipe(*loop_, fd_, offset, bytes, pipe, &inline_io_);
}

Task<Result<void>> FileDriver::co_pwritev(uint64_t offset, const IoVec& iov, uint32_t) {
  Result<size_t> r = size_t{0};
  if (needs_bounce(iov)) {
    AlignedBuffer bounce(iov.size(), kDirectAlignment);
    iov.copy_to(0, bounce.data(), iov.size());
    r = co_await fs::co_pwritev(*loop_, fd_, bounce.iov(), offset, &inline_io_);
  } else {
    r = co_await fs::co_pwritev(*loop_, fd_, iov, offset, &inline_io_);
  }
  if (!r) co_return std::move(r).error();
  grow_to(offset + iov.size());
  co_return Result<void>{};
}

Task<Result<void>> FileDriver::co_extend_to(uint64_t end) {
  if (end <= size_ || is_block_device_) co_return Result<void>{};
  auto r = co_await fs::co_ftruncate(*loop_, fd_, end);
  if (r) size_ = end;
  co_return r;
}

Task<Result<void>> FileDriver::co_pwrite_zeroes(uint64_t offset, uint64_t bytes, uint32_t flags) {
  known_data_ = {};  // holes may be punched
  uint64_t end = offset + bytes;
  if ((flags & kReqMayUnmap) && punch_hole_works_ && !is_block_device_) {
    // Holes read as zeroes; beyond the end, growing the file is enough.
    uint64_t inside = std::min(end, size_);
    Result<void> r;
    if (inside > offset)
      r = co_await fs::co_punch_hole(*loop_, fd_, offset, inside - offset, &inline_io_);
    if (r) co_return co_await co_extend_to(end);
    if (r.error().code != EOPNOTSUPP && r.error().code != ENOTSUP) co_return r;
    punch_hole_works_ = false;
  }
  if (zero_range_works_ && !is_block_device_) {
    auto r = co_await fs::co_zero_range(*loop_, fd_, offset, bytes, end > size_, &inline_io_);
    if (r) {
      grow_to(end);
      co_return r;
    }
    if (r.error().code != EOPNOTSUPP && r.error().code != ENOTSUP) co_return r;
    zero_range_works_ = false;
  }
  if (punch_hole_works_ && !is_block_device_) {
    // Punch, then allocate again so the range stays allocated.
    uint64_t inside = std::min(end, size_);
    Result<void> r;
    if (inside > offset)
      r = co_await fs::co_punch_hole(*loop_, fd_, offset, inside - offset, &inline_io_);
    if (r) r = co_await fs::co_allocate(*loop_, fd_, offset, bytes, &inline_io_);
    if (r) {
      grow_to(end);
      co_return r;
    }
    if (r.error().code != EOPNOTSUPP && r.error().code != ENOTSUP) co_return r;
    punch_hole_works_ = false;
  }
  co_return Error{ENOTSUP, "write-zeroes not supported by the file system"};
}

Task<Result<void>> FileDriver::co_pdiscard(uint64_t offset, uint64_t bytes) {
  if (!punch_hole_works_ || is_block_device_ || offset >= size_) co_return Result<void>{};
  known_data_ = {};
  auto r =
      co_await fs::co_punch_hole(*loop_, fd_, offset, std::min(bytes, size_ - offset), &inline_io_);
  if (!r && (r.error().code == EOPNOTSUPP || r.error().code == ENOTSUP)) {
    punch_hole_works_ = false;
    co_return Result<void>{};  // discard is advisory
  }
  co_return r;
}

Task<Result<void>> FileDriver::co_flush() {
  co_return co_await fs::co_fdatasync(*loop_, fd_, &inline_io_);
}

Task<Result<BlockStatus>> FileDriver::co_block_status(uint64_t offset, uint64_t bytes) {
  BlockStatus st;
  st.map_offset = offset;
  st.map_node = &node();
  st.bytes = bytes;
  if (is_block_device_) {
    st.flags = kStatusData | kStatusOffsetValid;
    co_return st;
  }
  if (offset >= known_data_.start && offset < known_data_.end) {
    st.flags = kStatusData | kStatusOffsetValid;
    st.bytes = std::min(bytes, known_data_.end - offset);
    co_return st;
  }
  int fd = fd_;
  // {start of data at or after offset, start of hole at or after offset}
  auto found = co_await loop_->offload([fd, offset] {
    off_t data = lseek(fd, static_cast<off_t>(offset), SEEK_DATA);
    int data_err = data < 0 ? errno : 0;
    off_t hole = lseek(fd, static_cast<off_t>(offset), SEEK_HOLE);
    int hole_err = hole < 0 ? errno : 0;
    return std::array<int64_t, 4>{data, data_err, hole, hole_err};
  });
  auto [data, data_err, hole, hole_err] = found;
  if (data_err == ENXIO) {
    st.flags = kStatusZero | kStatusOffsetValid;  // a hole to the end of the file
  } else if (data_err || hole_err) {
    st.flags = kStatusData | kStatusOffsetValid;  // no SEEK_DATA support: all data
  } else if (static_cast<uint64_t>(data) > offset) {
    st.flags = kStatusZero | kStatusOffsetValid;
    st.bytes = std::min<uint64_t>(bytes, static_cast<uint64_t>(data) - offset);
  } else {
    st.flags = kStatusData | kStatusOffsetValid;
    st.bytes = std::min<uint64_t>(bytes, static_cast<uint64_t>(hole) - offset);
    known_data_ = {offset, static_cast<uint64_t>(hole)};
  }
  if (st.bytes == 0) st.bytes = bytes;
  co_return st;
}

Task<Result<void>> FileDriver::co_truncate(uint64_t new_size, bool, Preallocation prealloc) {
  known_data_ = {};
  if (is_block_device_) {
    if (new_size > size_) co_return Error{EINVAL, "Cannot grow device files"};
    co_return Result<void>{};
  }
  uint64_t old_size = size_;
  if (prealloc == Preallocation::kMetadata) {
    co_return Error{ENOTSUP, "Unsupported preallocation mode 'metadata'"};
  }
  auto r = co_await fs::co_ftruncate(*loop_, fd_, new_size);
  if (!r) co_return r;
  size_ = new_size;
  if (new_size > old_size && prealloc == Preallocation::kFalloc) {
    r = co_await fs::co_allocate(*loop_, fd_, old_size, new_size - old_size, &inline_io_);
  } else if (new_size > old_size && prealloc == Preallocation::kFull) {
    AlignedBuffer zeroes(std::min<uint64_t>(new_size - old_size, 1 << 20));
    std::memset(zeroes.data(), 0, zeroes.size());
    for (uint64_t pos = old_size; r && pos < new_size;) {
      uint64_t len = std::min<uint64_t>(zeroes.size(), new_size - pos);
      auto w = co_await fs::co_pwritev(*loop_, fd_, IoVec(zeroes.data(), len), pos, &inline_io_);
      if (!w) r = std::move(w).error();
      pos += len;
    }
  }
  co_return r;
}

Result<void> FileDriver::check_perm(uint64_t perm, uint64_t shared) {
  if (!locking_ || fd_ < 0) return {};
  return ImageLock::test(fd_, perm, shared, filename_);
}

void FileDriver::set_perm(uint64_t perm, uint64_t shared) {
  perm_ = perm;
  shared_ = shared;
  if (!locking_ || fd_ < 0) return;
  (void)ImageLock::apply(fd_, perm, shared);
}

Task<Result<void>> FileDriver::co_reopen_prepare(const NodeFlags& flags) {
  if (flags.read_only == node().read_only() && flags.cache_direct == direct_) {
    co_return Result<void>{};
  }
  int oflags = (flags.read_only ? O_RDONLY : O_RDWR) | (flags.cache_direct ? O_DIRECT : 0);
  auto fd = co_await fs::co_open(*loop_, filename_, oflags);
  if (!fd) co_return std::move(fd).error();
  reopen_fd_ = *fd;
  reopen_direct_ = flags.cache_direct;
  co_return Result<void>{};
}

void FileDriver::reopen_commit() {
  if (reopen_fd_ < 0) return;
  if (locking_) (void)ImageLock::apply(reopen_fd_, perm_, shared_);
  ::close(std::exchange(fd_, std::exchange(reopen_fd_, -1)));
  direct_ = reopen_direct_;
  probe_io();
}

void FileDriver::reopen_abort() {
  if (reopen_fd_ >= 0) ::close(std::exchange(reopen_fd_, -1));
}

// "file:NAME" is the file NAME (QEMU's raw_parse_filename).
Result<nlohmann::json> parse_file_filename(const std::string& filename) {
  std::string name = filename.rfind("file:", 0) == 0 ? filename.substr(5) : filename;
  return nlohmann::json{{"filename", name}};
}

}  // namespace

void register_file_driver(DriverRegistry& registry) {
  registry.add(DriverSpec{"file",
                          DriverKind::kProtocol,
                          {{"filename", OptType::kString, true},
                           {"locking", OptType::kString},
                           {"aio", OptType::kString},
                           {"aio-max-batch", OptType::kInt},
                           {"drop-cache", OptType::kBool},
                           {"pr-manager", OptType::kString},
                           {"x-check-cache-dropped", OptType::kBool}},
                          [] { return std::make_unique<FileDriver>(); },
                          {"file"},
                          parse_file_filename});
}

}  // namespace strata
