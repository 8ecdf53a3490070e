#include "block/drivers/nbd/nbd_driver.h"

#include "base/log.h"
#include "base/net.h"
#include "block/core/graph.h"
#include "block/drivers/nbd/tls_client.h"
#include "nbd/protocol.h"
#include "strata/engine.h"

namespace strata {

namespace {

using namespace nbdc;
namespace proto = strata::nbd;

constexpr uint64_t kRetryStepMs = 50;
constexpr uint64_t kMaxRetryIntervalMs = 2000;
constexpr uint32_t kMaxBuffer = 32u << 20;    // largest READ/WRITE sent (as QEMU)
constexpr uint64_t kMaxLength = 0x7fffffffu;  // largest TRIM/ZEROES/BLOCK_STATUS length

enum class LinkState { kConnected, kWaiting, kFailed, kClosed };

class NbdDriver final : public Driver {
 public:
  Task<Result<void>> co_open(OpenContext& ctx) override;
  Task<void> co_close() override;
  Task<Result<void>> co_preadv(uint64_t offset, const IoVec& iov, uint32_t flags) override;
  Task<Result<void>> co_pwritev(uint64_t offset, const IoVec& iov, uint32_t flags) override;
  Task<Result<void>> co_pwrite_zeroes(uint64_t offset, uint64_t bytes, uint32_t flags) override;
  Task<Result<void>> co_pdiscard(uint64_t offset, uint64_t bytes) override;
  Task<Result<void>> co_flush() override;
  Task<Result<BlockStatus>> co_block_status(uint64_t offset, uint64_t bytes) override;
  uint64_t size() const override { return info_.size; }
  Limits limits() const override;
  std::string filename() const override { return address_.uri(); }
  nlohmann::json format_specific() const override { return nullptr; }
  nlohmann::json block_info_extension() const override;
  Task<Result<void>> co_reopen_prepare(const NodeFlags& flags) override;

 private:
  Result<void> parse_options(OpenContext& ctx);
  bool offers(uint16_t flag) const { return info_.flags & flag; }
  Task<Result<std::shared_ptr<Connection>>> co_connect_once();
  Task<Result<void>> co_connect_initial();
  Result<void> adopt_first(const ExportInfo& info);
  Result<void> check_same_export(const ExportInfo& info) const;
  void on_connection_lost();
  Task<void> co_reconnect_loop();
  Task<void> co_delay_timer(uint64_t epoch);
  Task<void> co_sleep_unless_closed(uint64_t ms);
  Task<Result<void>> co_wait_connected();
  Task<Result<void>> co_send(NbdRequest& request);

  Loop* loop_ = nullptr;
  NbdAddress address_;
  HandshakeParams params_;
  std::string bitmap_;
  uint64_t reconnect_delay_ms_ = 0;
  uint64_t open_timeout_ms_ = 0;
  ExportInfo info_;
  std::shared_ptr<Connection> conn_;
  LinkState state_ = LinkState::kFailed;
  uint64_t epoch_ = 0;  // counts disconnects
  std::unique_ptr<CoQueue> state_changed_;
  std::unique_ptr<TaskGroup> background_;
  Stream* connecting_ = nullptr;  // socket of a handshake in progress
};

Result<uint64_t> seconds_option(const nlohmann::json& o, const char* name) {
  auto it = o.find(name);
  if (it == o.end()) return uint64_t{0};
  if (!it->is_number_integer() || it->get<int64_t>() < 0 || it->get<int64_t>() > 86400 * 365) {
    return Error{EINVAL, std::string("Parameter '") + name + "' expects a non-negative number"};
  }
  return it->get<uint64_t>() * 1000;
}

Result<void> NbdDriver::parse_options(OpenContext& ctx) {
  const auto& o = ctx.options();
  if (!o.contains("server")) return Error{EINVAL, "Parameter 'server' is missing"};
  STRATA_TRY_ASSIGN(address_, parse_server_option(o["server"], opt_string(o, "export")));
  params_.export_name = address_.export_name;
  bitmap_ = opt_string(o, "x-dirty-bitmap");
  params_.meta_context = bitmap_.empty() ? "base:allocation" : "qemu:dirty-bitmap:" + bitmap_;
  STRATA_TRY_ASSIGN(reconnect_delay_ms_, seconds_option(o, "reconnect-delay"));
  STRATA_TRY_ASSIGN(open_timeout_ms_, seconds_option(o, "open-timeout"));
  std::string creds_id = opt_string(o, "tls-creds");
  std::string hostname = opt_string(o, "tls-hostname");
  if (!creds_id.empty()) {
    if (hostname.empty() && !address_.is_unix()) hostname = address_.host;
    STRATA_TRY_ASSIGN(params_.start_tls,
                      make_tls_starter(ctx.graph().credentials(), creds_id, hostname));
  } else if (!hostname.empty()) {
    return Error{EINVAL, "tls-hostname is set but tls-creds is not"};
  }
  return {};
}

Task<Result<void>> NbdDriver::co_open(OpenContext& ctx) {
  ignore_sigpipe_by_default();
  loop_ = &ctx.loop();
  state_changed_ = std::make_unique<CoQueue>(*loop_);
  background_ = std::make_unique<TaskGroup>(*loop_);
  STRATA_CO_TRY(parse_options(ctx));
  STRATA_CO_TRY(co_await co_connect_initial());
  NodeFlags& flags = node().mutable_flags();
  if (offers(proto::kFlagReadOnly) && !flags.read_only) {
    if (!flags.auto_read_only) {
      co_await co_close();
      co_return Error{EACCES, "Export '" + address_.export_name + "' is read-only"};
    }
    flags.read_only = true;
  }
  co_return Result<void>{};
}

Task<Result<std::shared_ptr<Connection>>> NbdDriver::co_connect_once() {
  Result<std::unique_ptr<Stream>> stream = Error{};
  if (address_.is_unix()) {
    stream = co_await co_connect_unix(*loop_, address_.unix_path);
  } else {
    stream = co_await co_connect_tcp(*loop_, address_.host, address_.port);
  }
  if (!stream) {
    co_return Error{stream.error().code,
                    "Failed to connect to '" + address_.uri() + "': " + stream.error().message};
  }
  connecting_ = stream->get();
  auto negotiated = co_await co_client_handshake(std::move(*stream), params_);
  connecting_ = nullptr;
  if (!negotiated) co_return std::move(negotiated).error();
  if (!bitmap_.empty() && !negotiated->info.has_context) {
    negotiated->channel->close();
    co_return Error{ENOENT, "requested x-dirty-bitmap " + bitmap_ + " not found"};
  }
  auto conn = std::make_shared<Connection>(*loop_, std::move(*negotiated),
                                           [this] { on_connection_lost(); });
  conn->start();
  co_return conn;
}

Task<Result<void>> NbdDriver::co_connect_initial() {
  uint64_t deadline = Loop::now_ns() / 1000000 + open_timeout_ms_;
  for (uint64_t interval = 100;; interval = std::min(interval * 2, kMaxRetryIntervalMs)) {
    auto conn = co_await co_connect_once();
    if (conn) {
      auto adopted = adopt_first((*conn)->info());
      conn_ = std::move(*conn);
      state_ = LinkState::kConnected;
      co_return adopted;
    }
    uint64_t now = Loop::now_ns() / 1000000;
    if (now >= deadline) co_return std::move(conn).error();
    co_await loop_->co_sleep(std::min(interval, deadline - now));
  }
}

Result<void> NbdDriver::adopt_first(const ExportInfo& info) {
  info_ = info;
  if (info_.max_block < info_.min_block) info_.max_block = info_.min_block;
  return {};
}

Result<void> NbdDriver::check_same_export(const ExportInfo& info) const {
  if (info.size != info_.size) return Error{EIO, "NBD export changed size on reconnect"};
  if ((info.flags & proto::kFlagReadOnly) && !node().read_only()) {
    return Error{EIO, "NBD export became read-only on reconnect"};
  }
  if (info.min_block > info_.min_block || info.extended != info_.extended ||
      info.has_context != info_.has_context) {
    return Error{EIO, "NBD export changed its constraints on reconnect"};
  }
  return {};
}

void NbdDriver::on_connection_lost() {
  if (state_ == LinkState::kClosed) return;
  node().engine().logger().warning("nbd: node '" + node().name() + "': connection lost (" +
                                   (conn_ ? conn_->lost_reason() : std::string()) + ")");
  epoch_++;
  state_ = reconnect_delay_ms_ ? LinkState::kWaiting : LinkState::kFailed;
  background_->spawn(co_reconnect_loop());
  if (reconnect_delay_ms_) background_->spawn(co_delay_timer(epoch_));
  state_changed_->wake_all();
}

Task<void> NbdDriver::co_sleep_unless_closed(uint64_t ms) {
  for (uint64_t slept = 0; slept < ms && state_ != LinkState::kClosed; slept += kRetryStepMs) {
    co_await loop_->co_sleep(std::min(kRetryStepMs, ms - slept));
  }
}

Task<void> NbdDriver::co_delay_timer(uint64_t epoch) {
  co_await co_sleep_unless_closed(reconnect_delay_ms_);
  if (epoch_ == epoch && state_ == LinkState::kWaiting) {
    state_ = LinkState::kFailed;
    state_changed_->wake_all();
  }
}

Task<void> NbdDriver::co_reconnect_loop() {
  std::shared_ptr<Connection> old = std::move(conn_);
  if (old) co_await old->co_close();
  for (uint64_t interval = 100; state_ != LinkState::kClosed;
       interval = std::min(interval * 2, kMaxRetryIntervalMs)) {
    auto conn = co_await co_connect_once();
    if (conn && state_ == LinkState::kClosed) {
      co_await (*conn)->co_close();
      break;
    }
    Result<void> same = conn ? check_same_export((*conn)->info()) : Result<void>{};
    if (conn && same) {
      conn_ = std::move(*conn);
      state_ = LinkState::kConnected;
      state_changed_->wake_all();
      node().engine().logger().info("nbd: node '" + node().name() + "': reconnected");
      break;
    }
    if (conn) co_await (*conn)->co_close();
    co_await co_sleep_unless_closed(interval);
  }
}

Task<Result<void>> NbdDriver::co_wait_connected() {
  while (state_ == LinkState::kWaiting) co_await state_changed_->wait();
  if (state_ == LinkState::kConnected) co_return Result<void>{};
  co_return Error{EIO, "NBD server '" + address_.uri() + "' is not connected"};
}

Task<Result<void>> NbdDriver::co_send(NbdRequest& request) {
  for (;;) {
    if (state_ != LinkState::kConnected || !conn_ || conn_->lost()) {
      STRATA_CO_TRY(co_await co_wait_connected());
    }
    std::shared_ptr<Connection> conn = conn_;
    auto r = co_await conn->co_request(request);
    if (r || r.error().code != ENOTCONN) co_return r;
    if (!reconnect_delay_ms_ || state_ == LinkState::kClosed) {
      co_return Error{EIO, r.error().message};
    }
  }
}

Limits NbdDriver::limits() const {
  Limits l;
  uint32_t align = info_.min_block ? info_.min_block : 1;
  auto align_down = [align](uint64_t v) { return std::max<uint64_t>(v - v % align, align); };
  l.request_alignment = align;
  l.max_transfer = align_down(std::min(info_.max_block, kMaxBuffer));
  l.opt_transfer = info_.pref_block;
  l.discard_alignment = align;
  l.zeroes_alignment = align;
  l.max_discard = align_down(kMaxLength);
  l.max_zeroes = align_down(kMaxLength);
  l.supports_fua = offers(proto::kFlagSendFua);
  return l;
}

Task<Result<void>> NbdDriver::co_preadv(uint64_t offset, const IoVec& iov, uint32_t) {
  NbdRequest r{.type = proto::kCmdRead, .offset = offset, .length = iov.size(), .data = &iov};
  co_return co_await co_send(r);
}

Task<Result<void>> NbdDriver::co_pwritev(uint64_t offset, const IoVec& iov, uint32_t flags) {
  if (node().read_only()) co_return Error{EROFS, "NBD export is read-only"};
  NbdRequest r{.type = proto::kCmdWrite, .offset = offset, .length = iov.size(), .data = &iov};
  if ((flags & kReqFua) && offers(proto::kFlagSendFua)) r.flags |= proto::kCmdFlagFua;
  co_return co_await co_send(r);
}

Task<Result<void>> NbdDriver::co_pwrite_zeroes(uint64_t offset, uint64_t bytes, uint32_t flags) {
  if (!offers(proto::kFlagSendWriteZeroes))
    co_return Error{ENOTSUP, "NBD server cannot write zeroes"};
  NbdRequest r{.type = proto::kCmdWriteZeroes, .offset = offset, .length = bytes};
  if (!(flags & kReqMayUnmap)) r.flags |= proto::kCmdFlagNoHole;
  if (flags & kReqNoFallback) {
    if (!offers(proto::kFlagSendFastZero)) co_return Error{ENOTSUP, "NBD server has no fast zero"};
    r.flags |= proto::kCmdFlagFastZero;
  }
  if ((flags & kReqFua) && offers(proto::kFlagSendFua)) r.flags |= proto::kCmdFlagFua;
  co_return co_await co_send(r);
}

Task<Result<void>> NbdDriver::co_pdiscard(uint64_t offset, uint64_t bytes) {
  if (!offers(proto::kFlagSendTrim)) co_return Result<void>{};
  NbdRequest r{.type = proto::kCmdTrim, .offset = offset, .length = bytes};
  co_return co_await co_send(r);
}

Task<Result<void>> NbdDriver::co_flush() {
  if (!offers(proto::kFlagSendFlush)) co_return Result<void>{};
  NbdRequest r{.type = proto::kCmdFlush};
  co_return co_await co_send(r);
}

Task<Result<BlockStatus>> NbdDriver::co_block_status(uint64_t offset, uint64_t bytes) {
  BlockStatus st;
  st.map_offset = offset;
  st.map_node = &node();
  st.bytes = bytes;
  st.flags = kStatusData | kStatusOffsetValid;
  if (!info_.has_context) co_return st;
  uint32_t align = info_.min_block ? info_.min_block : 1;
  uint64_t length = std::min<uint64_t>(bytes, kMaxLength - kMaxLength % align);
  NbdRequest r{.type = proto::kCmdBlockStatus,
               .flags = proto::kCmdFlagReqOne,
               .offset = offset,
               .length = length};
  STRATA_CO_TRY(co_await co_send(r));
  // QEMU's mapping: a hole is not data; the dirty bit of qemu:dirty-bitmap
  // is the same bit, so dirty ranges read as "not data" with x-dirty-bitmap.
  st.bytes = r.extent_length;
  st.flags = kStatusOffsetValid |
             ((r.extent_flags & proto::kStateHole) ? 0 : uint32_t{kStatusData}) |
             ((r.extent_flags & proto::kStateZero) ? uint32_t{kStatusZero} : 0);
  co_return st;
}

const char* link_state_name(LinkState s) {
  switch (s) {
    case LinkState::kConnected:
      return "connected";
    case LinkState::kWaiting:
      return "reconnecting";
    case LinkState::kFailed:
      return "failed";
    case LinkState::kClosed:
      break;
  }
  return "closed";
}

nlohmann::json NbdDriver::block_info_extension() const {
  return {{"x-link-state", link_state_name(state_)}};
}

// Read-only and read-write both ways, unless the export itself is
// read-only; the connection stays as it is (NBD has no per-connection mode).
Task<Result<void>> NbdDriver::co_reopen_prepare(const NodeFlags& flags) {
  if (!flags.read_only && offers(proto::kFlagReadOnly)) {
    co_return Error{
        EACCES, "Can't reopen read-only NBD export '" + address_.export_name + "' as read/write"};
  }
  if (flags.cache_direct != node().flags().cache_direct) {
    co_return Error{EINVAL, "Cannot change the option 'cache.direct'"};
  }
  co_return Result<void>{};
}

Task<void> NbdDriver::co_close() {
  if (state_ == LinkState::kClosed) co_return;
  state_ = LinkState::kClosed;
  if (connecting_) connecting_->close();
  state_changed_->wake_all();
  std::shared_ptr<Connection> conn = std::move(conn_);
  if (conn) co_await conn->co_close();
  co_await background_->co_join();
}

}  // namespace

void register_nbd_driver(DriverRegistry& registry) {
  registry.add(DriverSpec{"nbd",
                          DriverKind::kProtocol,
                          {{"server", OptType::kObject},
                           {"export", OptType::kString},
                           {"tls-creds", OptType::kString},
                           {"tls-hostname", OptType::kString},
                           {"reconnect-delay", OptType::kUint},
                           {"open-timeout", OptType::kUint},
                           {"x-dirty-bitmap", OptType::kString}},
                          [] { return std::make_unique<NbdDriver>(); },
                          {"nbd", "nbd+tcp", "nbd+unix"},
                          nbd_filename_options});
}

}  // namespace strata
