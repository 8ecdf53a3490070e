// Fuzz target for the NBD server's parsers: the bytes are what a client
// sends. The first byte picks the entry point:
//   0: a whole session (greeting, options, requests) against a Connection
//      serving a writable null-co export;
//   1: the same, after a valid prefix (fixed newstyle, structured replies,
//      meta contexts, GO), so that the transmission phase is reached;
//   2: an extended-headers session after such a prefix;
//   3..6: parse_info_request, parse_meta_request, parse_request (both
//      forms), parse_block_status_payload.
// Build it with -fsanitize=fuzzer for libFuzzer; the unit test
// nbd_fuzz_replay_test.cc replays seeds and mutations of them.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "block/core/graph.h"
#include "nbd/connection.h"
#include "nbd/server.h"
#include "strata/engine.h"

namespace strata::nbd::fuzz {

// A client stream held in memory; what the server writes is dropped.
class MemoryChannel final : public Channel {
 public:
  MemoryChannel(const uint8_t* data, size_t size, size_t* written)
      : data_(data, data + size), written_(written) {}
  Task<Result<void>> co_read_exact(std::span<uint8_t> buf) override {
    if (closed_ || buf.size() > data_.size() - pos_) co_return Error{ECONNRESET, "end of input"};
    std::copy_n(data_.begin() + static_cast<long>(pos_), buf.size(), buf.begin());
    pos_ += buf.size();
    co_return Result<void>{};
  }
  Task<Result<void>> co_write(const IoVec& iov) override {
    if (closed_) co_return Error{EPIPE, "closed"};
    *written_ += iov.size();
    co_return Result<void>{};
  }
  void close() override { closed_ = true; }
  bool closed() const override { return closed_; }

 private:
  std::vector<uint8_t> data_;
  size_t pos_ = 0;
  size_t* written_;
  bool closed_ = false;
};

class FuzzHost final : public HandshakeHost {
 public:
  explicit FuzzHost(Export* exp) : exp_(exp) {}
  Export* find_export(const std::string& name) override { return name == "" ? exp_ : nullptr; }
  std::vector<Export*> list_exports() override { return {exp_}; }
  std::shared_ptr<TlsCreds> tls_creds() override { return nullptr; }
  bool shutting_down() override { return false; }

 private:
  Export* exp_;
};

inline void put32(std::vector<uint8_t>& v, uint32_t x) {
  for (int i = 3; i >= 0; i--) v.push_back(static_cast<uint8_t>(x >> (8 * i)));
}
inline void put64(std::vector<uint8_t>& v, uint64_t x) {
  put32(v, static_cast<uint32_t>(x >> 32));
  put32(v, static_cast<uint32_t>(x));
}
inline void put_option(std::vector<uint8_t>& v, uint32_t opt, const std::vector<uint8_t>& data) {
  put64(v, kIHaveOpt);
  put32(v, opt);
  put32(v, static_cast<uint32_t>(data.size()));
  v.insert(v.end(), data.begin(), data.end());
}

// A valid negotiation up to transmission.
inline std::vector<uint8_t> session_prefix(bool extended) {
  std::vector<uint8_t> v;
  put32(v, kClientFixedNewstyle | kClientNoZeroes);
  put_option(v, extended ? kOptExtendedHeaders : kOptStructuredReply, {});
  std::vector<uint8_t> meta;
  put32(meta, 0);
  put32(meta, 2);
  for (const std::string& q :
       std::vector<std::string>{"base:allocation", "qemu:allocation-depth"}) {
    put32(meta, static_cast<uint32_t>(q.size()));
    meta.insert(meta.end(), q.begin(), q.end());
  }
  put_option(v, kOptSetMetaContext, meta);
  std::vector<uint8_t> go;
  put32(go, 0);
  go.push_back(0);
  go.push_back(1);
  go.push_back(0);
  go.push_back(kInfoBlockSize);
  put_option(v, kOptGo, go);
  return v;
}

inline nlohmann::json node_options() {
  return {{"driver", "null-co"}, {"node-name", "fuzz"}, {"size", 1 << 20}, {"read-zeroes", true}};
}

inline Task<void> co_session(Engine* engine, std::vector<uint8_t> input, size_t* written) {
  auto node = co_await engine->graph().co_add(node_options());
  if (!node) co_return;
  ExportOptions eo;
  eo.node_name = "fuzz";
  eo.writable = true;
  eo.allocation_depth = true;
  auto exp = Export::create(engine->graph(), eo, nullptr);
  if (!exp) co_return;
  FuzzHost host(exp->get());
  {
    // A small budget and floor, so that requests done in pieces are fuzzed too.
    SharedResources shared(engine->loop(), 4u << 20, 64u << 10, 4u << 20);
    Connection conn(engine->loop(), host,
                    std::make_unique<MemoryChannel>(input.data(), input.size(), written),
                    ConnectionLimits{8, 8u << 20}, "fuzz", shared);
    co_await conn.co_run();
  }
  (void)co_await (*exp)->co_close(RemoveMode::kHard);
  co_await engine->co_close_all();
}

// Returns how many bytes the server wrote back (sessions only).
inline size_t run_one(const uint8_t* data, size_t size) {
  size_t written = 0;
  if (size == 0) return written;
  uint8_t mode = data[0] % 7;
  std::span<const uint8_t> rest(data + 1, size - 1);
  switch (mode) {
    case 0:
    case 1:
    case 2: {
      std::vector<uint8_t> input;
      if (mode > 0) input = session_prefix(mode == 2);
      input.insert(input.end(), rest.begin(), rest.end());
      Engine engine(EngineOptions{2});
      engine.run(co_session(&engine, std::move(input), &written));
      break;
    }
    case 3:
      (void)parse_info_request(rest);
      break;
    case 4: {
      auto r = parse_meta_request(rest);
      if (r) (void)match_contexts(ContextCatalog{true, {"b1", "b2"}}, r->queries, rest.size() % 2);
      break;
    }
    case 5:
      if (rest.size() >= kCompactRequestSize)
        (void)parse_request(rest.first(kCompactRequestSize), false);
      if (rest.size() >= kExtendedRequestSize)
        (void)parse_request(rest.first(kExtendedRequestSize), true);
      break;
    case 6:
      (void)parse_block_status_payload(rest);
      break;
  }
  return written;
}

}  // namespace strata::nbd::fuzz

#ifndef STRATA_NBD_FUZZ_NO_ENTRY
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)strata::nbd::fuzz::run_one(data, size);
  return 0;
}
#endif
