// The QMP fuzz target, shared by the libFuzzer entry point (qmp_fuzz.cc)
// and the corpus replay unit test (tests/unit/qmp/fuzz_replay_test.cc).
//
// Each input is a byte stream from one client: it goes through the stream
// reader and every message through the dispatcher of a fresh monitor
// session, exactly as a connection would. Commands that touch the host
// (create files, open files, quit) keep their argument validation but run
// a stub handler, so fuzzing cannot write anywhere.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "qmp/context.h"
#include "qmp/dispatcher.h"
#include "qmp/json_stream.h"
#include "strata/engine.h"

namespace strata::qmp::fuzz {

inline Task<Result<json>> co_stub(QmpContext&, json) {
  co_return json::object();
}

class Harness {
 public:
  Harness() : engine_(std::make_unique<Engine>()), ctx_(std::make_unique<QmpContext>(*engine_)) {
    for (const char* name : {"blockdev-create", "blockdev-snapshot-sync", "blockdev-add", "quit",
                             "object-add", "blockdev-reopen", "transaction"}) {
      const CommandSpec* spec = ctx_->registry().find(name);
      if (!spec) continue;
      CommandSpec stub = *spec;
      stub.handler = co_stub;
      ctx_->registry().add(stub);
    }
  }
  ~Harness() { engine_->run(engine_->co_close_all()); }

  void run_one(const uint8_t* data, size_t size) {
    engine_->run(co_run(ctx_.get(), std::string(reinterpret_cast<const char*>(data), size)));
  }

 private:
  static Task<void> co_run(QmpContext* ctx, std::string input) {
    JsonLimits limits;
    limits.max_message_bytes = 64 << 10;
    limits.max_depth = 64;
    JsonStreamReader reader(limits);
    std::vector<JsonMessage> messages;
    reader.feed(input, &messages);
    Session session;
    for (auto& m : messages) {
      json reply = co_await co_dispatch(*ctx, session, std::move(m));
      // Every reply must render as QMP text.
      (void)to_qmp_text(reply);
    }
  }

  std::unique_ptr<Engine> engine_;
  std::unique_ptr<QmpContext> ctx_;
};

}  // namespace strata::qmp::fuzz
