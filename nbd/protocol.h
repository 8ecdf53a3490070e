// NBD wire constants (the NBD protocol's doc/proto.md, including the
// extended-headers extension) and big-endian helpers.
//
// Contract: plain constants and pure functions; nothing here does I/O.
// Thread rules: none.
#pragma once

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace strata::nbd {

// Magic numbers.
constexpr uint64_t kNbdMagic = 0x4e42444d41474943ull;  // "NBDMAGIC"
constexpr uint64_t kIHaveOpt = 0x49484156454F5054ull;  // "IHAVEOPT"
constexpr uint64_t kOptReplyMagic = 0x0003e889045565a9ull;
constexpr uint32_t kRequestMagic = 0x25609513;
constexpr uint32_t kExtendedRequestMagic = 0x21e41c71;
constexpr uint32_t kSimpleReplyMagic = 0x67446698;
constexpr uint32_t kStructuredReplyMagic = 0x668e33ef;
constexpr uint32_t kExtendedReplyMagic = 0x6e8a278c;

// Handshake flags (server) and client flags.
constexpr uint16_t kFlagFixedNewstyle = 1 << 0;
constexpr uint16_t kFlagNoZeroes = 1 << 1;
constexpr uint32_t kClientFixedNewstyle = 1 << 0;
constexpr uint32_t kClientNoZeroes = 1 << 1;

// Options.
enum Option : uint32_t {
  kOptExportName = 1,
  kOptAbort = 2,
  kOptList = 3,
  kOptPeekExport = 4,
  kOptStartTls = 5,
  kOptInfo = 6,
  kOptGo = 7,
  kOptStructuredReply = 8,
  kOptListMetaContext = 9,
  kOptSetMetaContext = 10,
  kOptExtendedHeaders = 11,
};

// Option reply types.
constexpr uint32_t kRepAck = 1;
constexpr uint32_t kRepServer = 2;
constexpr uint32_t kRepInfo = 3;
constexpr uint32_t kRepMetaContext = 4;
constexpr uint32_t kRepErrBit = 1u << 31;
constexpr uint32_t kRepErrUnsup = kRepErrBit + 1;
constexpr uint32_t kRepErrPolicy = kRepErrBit + 2;
constexpr uint32_t kRepErrInvalid = kRepErrBit + 3;
constexpr uint32_t kRepErrPlatform = kRepErrBit + 4;
constexpr uint32_t kRepErrTlsReqd = kRepErrBit + 5;
constexpr uint32_t kRepErrUnknown = kRepErrBit + 6;
constexpr uint32_t kRepErrShutdown = kRepErrBit + 7;
constexpr uint32_t kRepErrBlockSizeReqd = kRepErrBit + 8;
constexpr uint32_t kRepErrTooBig = kRepErrBit + 9;
constexpr uint32_t kRepErrExtHeaderReqd = kRepErrBit + 10;

// Info types (NBD_OPT_INFO / NBD_OPT_GO).
constexpr uint16_t kInfoExport = 0;
constexpr uint16_t kInfoName = 1;
constexpr uint16_t kInfoDescription = 2;
constexpr uint16_t kInfoBlockSize = 3;

// Transmission flags.
constexpr uint16_t kFlagHasFlags = 1 << 0;
constexpr uint16_t kFlagReadOnly = 1 << 1;
constexpr uint16_t kFlagSendFlush = 1 << 2;
constexpr uint16_t kFlagSendFua = 1 << 3;
constexpr uint16_t kFlagRotational = 1 << 4;
constexpr uint16_t kFlagSendTrim = 1 << 5;
constexpr uint16_t kFlagSendWriteZeroes = 1 << 6;
constexpr uint16_t kFlagSendDf = 1 << 7;
constexpr uint16_t kFlagCanMultiConn = 1 << 8;
constexpr uint16_t kFlagSendResize = 1 << 9;
constexpr uint16_t kFlagSendCache = 1 << 10;
constexpr uint16_t kFlagSendFastZero = 1 << 11;
constexpr uint16_t kFlagBlockStatusPayload = 1 << 12;

// Commands.
enum Command : uint16_t {
  kCmdRead = 0,
  kCmdWrite = 1,
  kCmdDisc = 2,
  kCmdFlush = 3,
  kCmdTrim = 4,
  kCmdCache = 5,
  kCmdWriteZeroes = 6,
  kCmdBlockStatus = 7,
};

// Command flags.
constexpr uint16_t kCmdFlagFua = 1 << 0;
constexpr uint16_t kCmdFlagNoHole = 1 << 1;
constexpr uint16_t kCmdFlagDf = 1 << 2;
constexpr uint16_t kCmdFlagReqOne = 1 << 3;
constexpr uint16_t kCmdFlagFastZero = 1 << 4;
constexpr uint16_t kCmdFlagPayloadLen = 1 << 5;

// Reply flags and structured chunk types.
constexpr uint16_t kReplyFlagDone = 1 << 0;
constexpr uint16_t kChunkNone = 0;
constexpr uint16_t kChunkOffsetData = 1;
constexpr uint16_t kChunkOffsetHole = 2;
constexpr uint16_t kChunkBlockStatus = 5;
constexpr uint16_t kChunkBlockStatusExt = 6;
constexpr uint16_t kChunkError = 0x8001;
constexpr uint16_t kChunkErrorOffset = 0x8002;

// Transmission error values.
constexpr uint32_t kEperm = 1;
constexpr uint32_t kEio = 5;
constexpr uint32_t kEnomem = 12;
constexpr uint32_t kEinval = 22;
constexpr uint32_t kEnospc = 28;
constexpr uint32_t kEoverflow = 75;
constexpr uint32_t kEnotsup = 95;
constexpr uint32_t kEshutdown = 108;

// base:allocation and qemu: context bits.
constexpr uint32_t kStateHole = 1 << 0;
constexpr uint32_t kStateZero = 1 << 1;
constexpr uint32_t kStateDirty = 1 << 0;

// Limits.
constexpr uint32_t kMaxStringSize = 4096;           // names, queries, messages
constexpr uint32_t kMaxPayload = 32 * 1024 * 1024;  // READ/WRITE/CACHE data
constexpr uint32_t kMaxOptionLength = 1 << 20;      // larger option data: disconnect
constexpr uint32_t kMaxExtentsPerReply = 1 << 17;   // as qemu

// Sizes of fixed messages.
constexpr size_t kCompactRequestSize = 28;
constexpr size_t kExtendedRequestSize = 32;
constexpr size_t kSimpleReplySize = 16;
constexpr size_t kStructuredHeaderSize = 20;
constexpr size_t kExtendedHeaderSize = 32;

// Host errno to the NBD error values (unknown values become EINVAL).
uint32_t errno_to_nbd(int error);
const char* option_name(uint32_t option);
const char* command_name(uint16_t command);

// Big-endian encoding into a growing byte vector.
class Writer {
 public:
  Writer& u8(uint8_t v) {
    bytes_.push_back(v);
    return *this;
  }
  Writer& u16(uint16_t v) { return be(v, 2); }
  Writer& u32(uint32_t v) { return be(v, 4); }
  Writer& u64(uint64_t v) { return be(v, 8); }
  Writer& str(const std::string& s) {
    bytes_.insert(bytes_.end(), s.begin(), s.end());
    return *this;
  }
  Writer& zeroes(size_t n) {
    bytes_.insert(bytes_.end(), n, 0);
    return *this;
  }
  std::vector<uint8_t>& bytes() { return bytes_; }
  size_t size() const { return bytes_.size(); }
  // Overwrites 4 bytes at `at` (a length filled in later).
  void patch_u32(size_t at, uint32_t v) {
    for (int i = 0; i < 4; i++) bytes_[at + i] = static_cast<uint8_t>(v >> (24 - 8 * i));
  }

 private:
  Writer& be(uint64_t v, int n) {
    for (int i = n - 1; i >= 0; i--) bytes_.push_back(static_cast<uint8_t>(v >> (8 * i)));
    return *this;
  }
  std::vector<uint8_t> bytes_;
};

// Big-endian decoding from a byte range; reads past the end set failed().
class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  explicit Reader(const std::vector<uint8_t>& v) : Reader(v.data(), v.size()) {}

  uint16_t u16() { return static_cast<uint16_t>(be(2)); }
  uint32_t u32() { return static_cast<uint32_t>(be(4)); }
  uint64_t u64() { return be(8); }
  std::string str(size_t n) {
    if (!take(n)) return {};
    return std::string(reinterpret_cast<const char*>(data_ + pos_ - n), n);
  }
  size_t remaining() const { return failed_ ? 0 : size_ - pos_; }
  bool failed() const { return failed_; }
  bool done() const { return !failed_ && pos_ == size_; }

 private:
  bool take(size_t n) {
    if (failed_ || n > size_ - pos_) {
      failed_ = true;
      return false;
    }
    pos_ += n;
    return true;
  }
  uint64_t be(int n) {
    if (!take(n)) return 0;
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = (v << 8) | data_[pos_ - n + i];
    return v;
  }
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  bool failed_ = false;
};

}  // namespace strata::nbd
