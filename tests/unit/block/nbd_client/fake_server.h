// A scripted NBD server for testing the client driver against servers that
// break the protocol.
//
// Contract: the constructor binds a Unix socket in a fresh temporary
// directory and starts a thread that accepts one client (waiting at most a
// few seconds), runs the script on it, then closes the connection. Every
// socket call of the thread is bounded by a timeout, so a client that stops
// talking cannot hang the test: the script's reads fail and the thread ends.
// The listening socket is closed right after the accept, so reconnection
// attempts by the client fail quickly. The destructor joins the thread.
// Thread rules: the script runs on the server thread; the test thread only
// constructs, reads path(), and destroys.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <thread>
#include <vector>

namespace strata::nbdc::testing {

// What the scripted server negotiates in the handshake.
struct FakeExport {
  uint64_t size = 1 << 20;
  uint16_t flags = 0;       // transmission flags; HAS_FLAGS is added
  bool structured = true;   // accept STRUCTURED_REPLY
  bool extended = false;    // accept EXTENDED_HEADERS
  uint32_t context_id = 7;  // id granted to the requested meta context
  uint32_t max_block = 0;   // INFO_BLOCK_SIZE sent when non-zero
  uint32_t min_block = 1;
};

// A request the client sent in transmission phase.
struct FakeRequest {
  uint16_t flags = 0;
  uint16_t type = 0;
  uint64_t cookie = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
};

class FakeServer {
 public:
  using Script = std::function<void(FakeServer&)>;
  explicit FakeServer(Script script);
  ~FakeServer();
  FakeServer(const FakeServer&) = delete;
  FakeServer& operator=(const FakeServer&) = delete;

  const std::string& path() const { return path_; }

  // Script helpers (server thread). Each returns false once the connection
  // failed; later calls then do nothing.
  bool send(const std::vector<uint8_t>& bytes);
  bool recv(size_t n, std::vector<uint8_t>* out);
  // Runs the fixed newstyle handshake up to GO (options the export does not
  // support are refused), and records what was negotiated.
  bool handshake(const FakeExport& exp);
  bool read_request(FakeRequest* r);
  // Reads requests until one of `type` arrives (writes' payloads consumed).
  bool read_request_of(uint16_t type, FakeRequest* r);
  bool simple_reply(uint64_t cookie, uint32_t error, const std::vector<uint8_t>& data = {});
  // A chunk header (structured or extended, as negotiated) and its payload;
  // `length` overrides the header's length field when not ~0.
  bool chunk(uint16_t flags, uint16_t type, uint64_t cookie, const std::vector<uint8_t>& payload,
             uint64_t length = ~0ull);
  bool data_chunk(uint64_t cookie, uint64_t offset, const std::vector<uint8_t>& data,
                  bool done = true);
  // Ends the server's side of the stream (the client reads EOF).
  void hang_up();
  // Reads and drops what the client sends until it closes the connection;
  // true if it did before the timeout.
  bool wait_closed();
  bool extended() const { return extended_; }

 private:
  void serve(int listener, Script script);
  bool handle_option(uint32_t option, const std::vector<uint8_t>& data, const FakeExport& exp,
                     bool* finished);
  bool option_reply(uint32_t option, uint32_t type, const std::vector<uint8_t>& data = {});

  std::string dir_;
  std::string path_;
  int fd_ = -1;
  bool ok_ = true;
  bool extended_ = false;
  std::thread thread_;
};

}  // namespace strata::nbdc::testing
