#include "fake_server.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include "nbd/protocol.h"

namespace strata::nbdc::testing {

using namespace strata::nbd;

namespace {
constexpr int kAcceptTimeoutMs = 10000;
constexpr int kIoTimeoutSec = 10;

void set_timeouts(int fd) {
  timeval tv{kIoTimeoutSec, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}
}  // namespace

FakeServer::FakeServer(Script script) {
  char tmpl[] = "/tmp/nbdc-fake-XXXXXX";
  if (!mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
  dir_ = tmpl;
  path_ = dir_ + "/s";
  int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path_.c_str(), sizeof(addr.sun_path) - 1);
  if (listener < 0 || bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      listen(listener, 4) != 0) {
    throw std::runtime_error("cannot listen on " + path_);
  }
  thread_ = std::thread([this, listener, script = std::move(script)] { serve(listener, script); });
}

FakeServer::~FakeServer() {
  thread_.join();
  std::filesystem::remove_all(dir_);
}

void FakeServer::serve(int listener, Script script) {
  pollfd p{listener, POLLIN, 0};
  if (poll(&p, 1, kAcceptTimeoutMs) == 1) fd_ = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
  close(listener);
  unlink(path_.c_str());
  if (fd_ < 0) return;
  set_timeouts(fd_);
  script(*this);
  shutdown(fd_, SHUT_RDWR);
  close(fd_);
}

bool FakeServer::send(const std::vector<uint8_t>& bytes) {
  size_t done = 0;
  while (ok_ && done < bytes.size()) {
    ssize_t n = ::send(fd_, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
    if (n <= 0) ok_ = false;
    if (n > 0) done += n;
  }
  return ok_;
}

bool FakeServer::recv(size_t n, std::vector<uint8_t>* out) {
  out->assign(n, 0);
  size_t done = 0;
  while (ok_ && done < n) {
    ssize_t got = ::recv(fd_, out->data() + done, n - done, 0);
    if (got <= 0) ok_ = false;
    if (got > 0) done += got;
  }
  return ok_;
}

void FakeServer::hang_up() {
  shutdown(fd_, SHUT_WR);
}

bool FakeServer::wait_closed() {
  uint8_t buf[4096];
  for (;;) {
    ssize_t got = ::recv(fd_, buf, sizeof(buf), 0);
    if (got == 0) return true;
    if (got < 0) return false;
  }
}

bool FakeServer::option_reply(uint32_t option, uint32_t type, const std::vector<uint8_t>& data) {
  Writer w;
  w.u64(kOptReplyMagic).u32(option).u32(type).u32(static_cast<uint32_t>(data.size()));
  w.bytes().insert(w.bytes().end(), data.begin(), data.end());
  return send(w.bytes());
}

bool FakeServer::handle_option(uint32_t option, const std::vector<uint8_t>& data,
                               const FakeExport& exp, bool* finished) {
  switch (option) {
    case kOptExtendedHeaders:
      extended_ = exp.extended;
      return option_reply(option, exp.extended ? kRepAck : kRepErrUnsup);
    case kOptStructuredReply:
      return option_reply(option, exp.structured ? kRepAck : kRepErrUnsup);
    case kOptSetMetaContext: {
      // One query (the client's): grant it under the export's id.
      Reader r(data);
      r.str(r.u32());
      r.u32();
      std::string query = r.str(r.u32());
      Writer w;
      w.u32(exp.context_id).str(query);
      return option_reply(option, kRepMetaContext, w.bytes()) && option_reply(option, kRepAck);
    }
    case kOptGo: {
      Writer info;
      info.u16(kInfoExport).u64(exp.size).u16(exp.flags | kFlagHasFlags);
      bool sent = option_reply(option, kRepInfo, info.bytes());
      if (exp.max_block) {
        Writer bs;
        bs.u16(kInfoBlockSize).u32(exp.min_block).u32(4096).u32(exp.max_block);
        sent = sent && option_reply(option, kRepInfo, bs.bytes());
      }
      *finished = true;
      return sent && option_reply(option, kRepAck);
    }
    default:
      return option_reply(option, kRepErrUnsup);
  }
}

bool FakeServer::handshake(const FakeExport& exp) {
  Writer hello;
  hello.u64(kNbdMagic).u64(kIHaveOpt).u16(kFlagFixedNewstyle | kFlagNoZeroes);
  std::vector<uint8_t> buf;
  if (!send(hello.bytes()) || !recv(4, &buf)) return false;
  for (bool finished = false; !finished;) {
    if (!recv(16, &buf)) return false;
    Reader r(buf);
    r.u64();
    uint32_t option = r.u32();
    uint32_t length = r.u32();
    if (length > (1u << 16) || !recv(length, &buf)) return false;
    if (!handle_option(option, buf, exp, &finished)) return false;
  }
  return true;
}

bool FakeServer::read_request(FakeRequest* req) {
  std::vector<uint8_t> buf;
  if (!recv(extended_ ? kExtendedRequestSize : kCompactRequestSize, &buf)) return false;
  Reader r(buf);
  r.u32();
  req->flags = r.u16();
  req->type = r.u16();
  req->cookie = r.u64();
  req->offset = r.u64();
  req->length = extended_ ? r.u64() : r.u32();
  if (req->type == kCmdWrite) return recv(req->length, &buf);
  return ok_;
}

bool FakeServer::read_request_of(uint16_t type, FakeRequest* r) {
  while (read_request(r)) {
    if (r->type == type) return true;
  }
  return false;
}

bool FakeServer::simple_reply(uint64_t cookie, uint32_t error, const std::vector<uint8_t>& data) {
  Writer w;
  w.u32(kSimpleReplyMagic).u32(error).u64(cookie);
  w.bytes().insert(w.bytes().end(), data.begin(), data.end());
  return send(w.bytes());
}

bool FakeServer::chunk(uint16_t flags, uint16_t type, uint64_t cookie,
                       const std::vector<uint8_t>& payload, uint64_t length) {
  if (length == ~0ull) length = payload.size();
  Writer w;
  if (extended_) {
    w.u32(kExtendedReplyMagic).u16(flags).u16(type).u64(cookie).u64(0).u64(length);
  } else {
    w.u32(kStructuredReplyMagic)
        .u16(flags)
        .u16(type)
        .u64(cookie)
        .u32(static_cast<uint32_t>(length));
  }
  w.bytes().insert(w.bytes().end(), payload.begin(), payload.end());
  return send(w.bytes());
}

bool FakeServer::data_chunk(uint64_t cookie, uint64_t offset, const std::vector<uint8_t>& data,
                            bool done) {
  Writer w;
  w.u64(offset);
  w.bytes().insert(w.bytes().end(), data.begin(), data.end());
  return chunk(done ? kReplyFlagDone : 0, kChunkOffsetData, cookie, w.bytes());
}

}  // namespace strata::nbdc::testing
