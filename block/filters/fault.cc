// fault: a filter that injects errors and delays, for tests (in the spirit of
// QEMU's blkdebug inject-error rules).
//
// Each rule names an event (read, write, zeroes, discard, flush, any), an
// optional byte range (offset, length), an errno (number or name; 0 for a
// pure delay), how many matching requests pass first (skip) and how many
// then fail (count, 0 for always), and a delay in milliseconds applied to
// matching requests. Requests that no rule fails are forwarded unchanged.
// A splice read that a read rule matches answers ENOTSUP without counting
// it, so the caller's fallback co_preadv meets the rule exactly once; other
// splice reads are forwarded.
#include <cstring>

#include "block/core/filter.h"
#include "block/core/graph.h"

namespace strata {

namespace {

enum class FaultEvent { kRead, kWrite, kZeroes, kDiscard, kFlush, kAny };

struct FaultRule {
  FaultEvent event = FaultEvent::kAny;
  int error = EIO;
  uint64_t offset = 0;
  uint64_t length = UINT64_MAX;
  uint64_t skip = 0;
  uint64_t count = 0;
  uint64_t delay_ms = 0;
  uint64_t seen = 0;   // matching requests so far
  uint64_t fired = 0;  // failures injected so far
};

Result<int> parse_errno(const nlohmann::json& v) {
  if (v.is_number_integer()) {
    int e = v.get<int>();
    if (e < 0) return Error{EINVAL, "errno must not be negative"};
    return e;
  }
  static const std::pair<const char*, int> kNames[] = {
      {"EIO", EIO},       {"ENOSPC", ENOSPC},   {"EPERM", EPERM},
      {"EINVAL", EINVAL}, {"ENOTSUP", ENOTSUP}, {"EROFS", EROFS},
      {"ENOMEM", ENOMEM}, {"EAGAIN", EAGAIN},   {"EDQUOT", EDQUOT}};
  std::string s = v.is_string() ? v.get<std::string>() : "";
  for (const auto& [name, value] : kNames) {
    if (s == name) return value;
  }
  return Error{EINVAL, "Parameter 'errno' does not accept value '" + s + "'"};
}

Result<FaultEvent> parse_event(const std::string& s) {
  if (s == "read") return FaultEvent::kRead;
  if (s == "write") return FaultEvent::kWrite;
  if (s == "zeroes") return FaultEvent::kZeroes;
  if (s == "discard") return FaultEvent::kDiscard;
  if (s == "flush") return FaultEvent::kFlush;
  if (s == "any") return FaultEvent::kAny;
  return Error{EINVAL, "Parameter 'event' does not accept value '" + s + "'"};
}

class FaultDriver final : public FilterDriver {
 public:
  Task<Result<void>> co_open(OpenContext& ctx) override {
    loop_ = &ctx.loop();
    if (auto r = parse_rules(ctx.options()); !r) co_return r;
    co_return co_await FilterDriver::co_open(ctx);
  }
  Task<Result<void>> co_preadv(uint64_t offset, const IoVec& iov, uint32_t flags) override {
    if (auto r = co_await co_apply(FaultEvent::kRead, offset, iov.size()); !r) co_return r;
    co_return co_await FilterDriver::co_preadv(offset, iov, flags);
  }
  Task<Result<void>> co_splice_read(uint64_t offset, uint64_t bytes, Pipe& pipe) override {
    for (const auto& rule : rules_) {
      if (matches(rule, FaultEvent::kRead, offset, bytes)) {
        co_return Error{ENOTSUP, "fault rules apply to this read: it takes co_preadv"};
      }
    }
    co_return co_await FilterDriver::co_splice_read(offset, bytes, pipe);
  }
  Task<Result<void>> co_pwritev(uint64_t offset, const IoVec& iov, uint32_t flags) override {
    if (auto r = co_await co_apply(FaultEvent::kWrite, offset, iov.size()); !r) co_return r;
    co_return co_await FilterDriver::co_pwritev(offset, iov, flags);
  }
  Task<Result<void>> co_pwrite_zeroes(uint64_t offset, uint64_t bytes, uint32_t flags) override {
    if (auto r = co_await co_apply(FaultEvent::kZeroes, offset, bytes); !r) co_return r;
    co_return co_await FilterDriver::co_pwrite_zeroes(offset, bytes, flags);
  }
  Task<Result<void>> co_pdiscard(uint64_t offset, uint64_t bytes) override {
    if (auto r = co_await co_apply(FaultEvent::kDiscard, offset, bytes); !r) co_return r;
    co_return co_await FilterDriver::co_pdiscard(offset, bytes);
  }
  Task<Result<void>> co_flush() override {
    co_return co_await co_apply(FaultEvent::kFlush, 0, UINT64_MAX);
  }

 private:
  Result<void> parse_rules(const nlohmann::json& options) {
    static const std::vector<OptionSpec> kRuleSpec = {
        {"event", OptType::kString, true}, {"errno", OptType::kAny}, {"offset", OptType::kUint},
        {"length", OptType::kUint},        {"skip", OptType::kUint}, {"count", OptType::kUint},
        {"delay-ms", OptType::kUint}};
    auto it = options.find("rules");
    if (it == options.end()) return {};
    for (size_t i = 0; i < it->size(); i++) {
      const auto& r = (*it)[i];
      STRATA_TRY(validate_options(r, kRuleSpec, "rules[" + std::to_string(i) + "]."));
      FaultRule rule;
      STRATA_TRY_ASSIGN(rule.event, parse_event(r["event"].get<std::string>()));
      if (r.contains("errno")) {
        STRATA_TRY_ASSIGN(rule.error, parse_errno(r["errno"]));
      }
      rule.offset = r.value("offset", uint64_t{0});
      rule.length = r.value("length", UINT64_MAX);
      rule.skip = r.value("skip", uint64_t{0});
      rule.count = r.value("count", uint64_t{0});
      rule.delay_ms = r.value("delay-ms", uint64_t{0});
      rules_.push_back(rule);
    }
    return {};
  }

  static bool matches(const FaultRule& rule, FaultEvent ev, uint64_t offset, uint64_t bytes) {
    if (rule.event != FaultEvent::kAny && rule.event != ev) return false;
    if (ev == FaultEvent::kFlush) return true;
    uint64_t rule_end =
        rule.length > UINT64_MAX - rule.offset ? UINT64_MAX : rule.offset + rule.length;
    return offset < rule_end && rule.offset < offset + bytes;
  }

  // Delays and/or fails a request as the first matching rule says.
  Task<Result<void>> co_apply(FaultEvent ev, uint64_t offset, uint64_t bytes) {
    for (auto& rule : rules_) {
      if (!matches(rule, ev, offset, bytes)) continue;
      rule.seen++;
      if (rule.seen <= rule.skip) continue;
      if (rule.count != 0 && rule.fired >= rule.count) continue;
      rule.fired++;
      if (rule.delay_ms) co_await loop_->co_sleep(rule.delay_ms);
      if (rule.error) {
        co_return Error{rule.error, std::string("injected fault: ") + std::strerror(rule.error)};
      }
      break;
    }
    co_return Result<void>{};
  }

  Loop* loop_ = nullptr;
  std::vector<FaultRule> rules_;
};

}  // namespace

void register_fault_filter(DriverRegistry& registry) {
  registry.add(DriverSpec{"fault",
                          DriverKind::kFilter,
                          {{"file", OptType::kChild, true}, {"rules", OptType::kArray}},
                          [] { return std::make_unique<FaultDriver>(); }});
}

}  // namespace strata
