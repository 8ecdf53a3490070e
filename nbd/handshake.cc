#include "nbd/handshake.h"

#include <algorithm>

#include "nbd/protocol.h"
#include "nbd/wire.h"

namespace strata::nbd {

namespace {
constexpr unsigned kMaxOptions = 4096;  // more looks like a denial of service
constexpr uint32_t kMaxBlockSize = kMaxPayload;

Error drop(std::string message) {
  return Error{EPROTO, std::move(message)};
}
}  // namespace

Task<Result<std::optional<Session>>> Handshake::co_run() {
  Writer greeting;
  greeting.u64(kNbdMagic).u64(kIHaveOpt).u16(kFlagFixedNewstyle | kFlagNoZeroes);
  STRATA_CO_TRY(co_await channel_->co_write_bytes(greeting.bytes()));
  uint8_t raw_flags[4];
  STRATA_CO_TRY(co_await channel_->co_read_exact(raw_flags));
  uint32_t flags = Reader(raw_flags, 4).u32();
  if (flags & ~(kClientFixedNewstyle | kClientNoZeroes)) {
    co_return drop("unknown client flags " + std::to_string(flags));
  }
  fixed_ = flags & kClientFixedNewstyle;
  no_zeroes_ = flags & kClientNoZeroes;
  for (;;) {
    auto opt = co_await co_read_option();
    if (!opt) co_return std::move(opt).error();
    if (++option_count_ > kMaxOptions) co_return drop("too many options");
    auto next = co_await co_dispatch(*opt);
    if (!next) co_return std::move(next).error();
    if (*next == Next::kAbort) co_return std::optional<Session>{};
    if (*next == Next::kTransmission) co_return std::optional<Session>{session_};
  }
}

Task<Result<Handshake::Option>> Handshake::co_read_option() {
  uint8_t header[16];
  STRATA_CO_TRY(co_await channel_->co_read_exact(header));
  Reader r(header, sizeof(header));
  if (r.u64() != kIHaveOpt) co_return drop("bad option magic");
  Option opt;
  opt.code = r.u32();
  uint32_t length = r.u32();
  if (length > kMaxOptionLength) co_return drop("option data too long");
  opt.data.resize(length);
  STRATA_CO_TRY(co_await channel_->co_read_exact(opt.data));
  co_return opt;
}

Task<Result<void>> Handshake::co_reply(uint32_t option, uint32_t type,
                                       std::span<const uint8_t> data) {
  Writer w;
  w.u64(kOptReplyMagic).u32(option).u32(type).u32(static_cast<uint32_t>(data.size()));
  w.bytes().insert(w.bytes().end(), data.begin(), data.end());
  co_return co_await channel_->co_write_bytes(w.bytes());
}

Task<Result<void>> Handshake::co_error(uint32_t option, uint32_t type, const std::string& message) {
  std::string text = message.substr(0, kMaxStringSize);
  co_return co_await co_reply(option, type,
                              {reinterpret_cast<const uint8_t*>(text.data()), text.size()});
}

Task<Result<Handshake::Next>> Handshake::co_dispatch(Option& opt) {
  if (!fixed_ && opt.code != kOptExportName) {
    co_return drop("option other than NBD_OPT_EXPORT_NAME without fixed newstyle");
  }
  if (opt.code == kOptAbort) {
    // The client may close first; a failed write changes nothing.
    (void)co_await co_reply(opt.code, kRepAck);
    co_return Next::kAbort;
  }
  if (host_.shutting_down()) {
    if (opt.code == kOptExportName) co_return drop("server is shutting down");
    STRATA_CO_TRY(co_await co_error(opt.code, kRepErrShutdown, "Server is shutting down"));
    co_return Next::kContinue;
  }
  if (tls_required() && opt.code != kOptStartTls) {
    if (opt.code == kOptExportName) co_return drop("NBD_OPT_EXPORT_NAME before TLS");
    STRATA_CO_TRY(co_await co_error(
        opt.code, kRepErrTlsReqd,
        "Option " + std::string(option_name(opt.code)) + " not permitted before TLS"));
    co_return Next::kContinue;
  }
  switch (opt.code) {
    case kOptExportName:
      co_return co_await co_export_name(opt);
    case kOptInfo:
    case kOptGo:
      co_return co_await co_info_or_go(opt);
    case kOptStartTls:
      co_return co_await co_starttls(opt);
    case kOptList:
      STRATA_CO_TRY(co_await co_list(opt));
      break;
    case kOptStructuredReply:
      STRATA_CO_TRY(co_await co_structured_reply(opt));
      break;
    case kOptExtendedHeaders:
      STRATA_CO_TRY(co_await co_extended_headers(opt));
      break;
    case kOptListMetaContext:
    case kOptSetMetaContext:
      STRATA_CO_TRY(co_await co_meta_context(opt));
      break;
    default:
      STRATA_CO_TRY(co_await co_error(
          opt.code, kRepErrUnsup,
          "Unsupported option " + std::to_string(opt.code) + " (" + option_name(opt.code) + ")"));
  }
  co_return Next::kContinue;
}

// Registers with `exp` and fixes what transmission will use.
bool Handshake::enter_export(Export* exp) {
  if (!exp->attach_client(client_)) return false;
  session_.exp = exp;
  if (meta_set_ && meta_export_ != exp->name()) session_.contexts.clear();
  session_.flags =
      exp->transmission_flags(session_.structured, session_.extended, !session_.contexts.empty());
  return true;
}

Task<Result<Handshake::Next>> Handshake::co_export_name(Option& opt) {
  std::string name(opt.data.begin(), opt.data.end());
  Export* exp = host_.find_export(name);
  if (!exp || !enter_export(exp)) co_return drop("export '" + name + "' not found");
  Writer w;
  w.u64(exp->size()).u16(session_.flags);
  if (!no_zeroes_) w.zeroes(124);
  STRATA_CO_TRY(co_await channel_->co_write_bytes(w.bytes()));
  co_return Next::kTransmission;
}

Task<Result<void>> Handshake::co_send_infos(uint32_t option, Export& exp,
                                            const std::vector<uint16_t>& infos) {
  auto has = [&](uint16_t t) { return std::find(infos.begin(), infos.end(), t) != infos.end(); };
  if (has(kInfoName)) {
    Writer w;
    w.u16(kInfoName).str(exp.name());
    STRATA_CO_TRY(co_await co_reply(option, kRepInfo, w.bytes()));
  }
  if (has(kInfoDescription) && !exp.options().description.empty()) {
    Writer w;
    w.u16(kInfoDescription).str(exp.options().description);
    STRATA_CO_TRY(co_await co_reply(option, kRepInfo, w.bytes()));
  }
  uint32_t min = session_.block_size_requested ? exp.min_block_size() : 1;
  Writer bs;
  bs.u16(kInfoBlockSize).u32(min).u32(std::max<uint32_t>(4096, min)).u32(kMaxBlockSize);
  STRATA_CO_TRY(co_await co_reply(option, kRepInfo, bs.bytes()));
  bool contexts = meta_set_ && meta_export_ == exp.name() && !session_.contexts.empty();
  Writer ex;
  ex.u16(kInfoExport)
      .u64(exp.size())
      .u16(exp.transmission_flags(session_.structured, session_.extended, contexts));
  co_return co_await co_reply(option, kRepInfo, ex.bytes());
}

Task<Result<Handshake::Next>> Handshake::co_info_or_go(Option& opt) {
  auto req = parse_info_request(opt.data);
  if (!req) {
    STRATA_CO_TRY(co_await co_error(opt.code, kRepErrInvalid, req.error().message));
    co_return Next::kContinue;
  }
  Export* exp = host_.find_export(req->name);
  if (!exp) {
    STRATA_CO_TRY(
        co_await co_error(opt.code, kRepErrUnknown, "export '" + req->name + "' not present"));
    co_return Next::kContinue;
  }
  bool requested = std::count(req->infos.begin(), req->infos.end(), kInfoBlockSize) > 0;
  bool saved = session_.block_size_requested;
  session_.block_size_requested = requested;
  STRATA_CO_TRY(co_await co_send_infos(opt.code, *exp, req->infos));
  if (!requested && exp->min_block_size() > 1 && opt.code == kOptInfo) {
    session_.block_size_requested = saved;
    STRATA_CO_TRY(co_await co_error(opt.code, kRepErrBlockSizeReqd,
                                    "request NBD_INFO_BLOCK_SIZE to use this export"));
    co_return Next::kContinue;
  }
  if (opt.code == kOptInfo) {
    session_.block_size_requested = saved;
    STRATA_CO_TRY(co_await co_reply(opt.code, kRepAck));
    co_return Next::kContinue;
  }
  if (!enter_export(exp)) {
    STRATA_CO_TRY(
        co_await co_error(opt.code, kRepErrUnknown, "export '" + req->name + "' is being removed"));
    co_return Next::kContinue;
  }
  STRATA_CO_TRY(co_await co_reply(opt.code, kRepAck));
  co_return Next::kTransmission;
}

Task<Result<void>> Handshake::co_list(Option& opt) {
  if (!opt.data.empty()) {
    co_return co_await co_error(opt.code, kRepErrInvalid, "NBD_OPT_LIST takes no data");
  }
  for (Export* exp : host_.list_exports()) {
    Writer w;
    w.u32(static_cast<uint32_t>(exp->name().size()))
        .str(exp->name())
        .str(exp->options().description);
    STRATA_CO_TRY(co_await co_reply(opt.code, kRepServer, w.bytes()));
  }
  co_return co_await co_reply(opt.code, kRepAck);
}

Task<Result<void>> Handshake::co_meta_context(Option& opt) {
  bool set = opt.code == kOptSetMetaContext;
  if (set) {
    // SET replaces the selection even when it fails.
    session_.contexts.clear();
    meta_set_ = false;
    if (!session_.structured) {
      co_return co_await co_error(opt.code, kRepErrInvalid,
                                  "request structured replies or extended headers first");
    }
  }
  auto req = parse_meta_request(opt.data);
  if (!req) co_return co_await co_error(opt.code, kRepErrInvalid, req.error().message);
  Export* exp = host_.find_export(req->export_name);
  if (!exp) {
    co_return co_await co_error(opt.code, kRepErrUnknown,
                                "export '" + req->export_name + "' not present");
  }
  auto matches = match_contexts(exp->catalog(), req->queries, !set);
  for (const auto& ctx : matches) {
    Writer w;
    w.u32(set ? ctx.id : 0).str(ctx.name);
    STRATA_CO_TRY(co_await co_reply(opt.code, kRepMetaContext, w.bytes()));
  }
  if (set) {
    session_.contexts = std::move(matches);
    meta_export_ = req->export_name;
    meta_set_ = true;
  }
  co_return co_await co_reply(opt.code, kRepAck);
}

Task<Result<void>> Handshake::co_structured_reply(Option& opt) {
  if (!opt.data.empty()) {
    co_return co_await co_error(opt.code, kRepErrInvalid, "NBD_OPT_STRUCTURED_REPLY takes no data");
  }
  if (session_.extended) {
    co_return co_await co_error(opt.code, kRepErrExtHeaderReqd,
                                "extended headers already negotiated");
  }
  if (session_.structured) {
    co_return co_await co_error(opt.code, kRepErrInvalid, "structured reply already negotiated");
  }
  session_.structured = true;
  co_return co_await co_reply(opt.code, kRepAck);
}

Task<Result<void>> Handshake::co_extended_headers(Option& opt) {
  if (!opt.data.empty()) {
    co_return co_await co_error(opt.code, kRepErrInvalid, "NBD_OPT_EXTENDED_HEADERS takes no data");
  }
  if (session_.extended) {
    co_return co_await co_error(opt.code, kRepErrInvalid, "extended headers already negotiated");
  }
  session_.extended = true;
  session_.structured = true;
  co_return co_await co_reply(opt.code, kRepAck);
}

Task<Result<Handshake::Next>> Handshake::co_starttls(Option& opt) {
  if (!opt.data.empty()) {
    STRATA_CO_TRY(co_await co_error(opt.code, kRepErrInvalid, "NBD_OPT_STARTTLS takes no data"));
    co_return Next::kContinue;
  }
  auto creds = host_.tls_creds();
  if (!creds) {
    STRATA_CO_TRY(co_await co_error(opt.code, kRepErrPolicy, "TLS not configured"));
    co_return Next::kContinue;
  }
  if (tls_active_) {
    STRATA_CO_TRY(co_await co_error(opt.code, kRepErrInvalid, "TLS already enabled"));
    co_return Next::kContinue;
  }
  STRATA_CO_TRY(co_await co_reply(opt.code, kRepAck));
  if (!dynamic_cast<PlainChannel*>(channel_.get())) {
    co_return drop("STARTTLS on a channel that cannot be upgraded");
  }
  STRATA_CO_TRY(co_await co_start_tls(creds, channel_));
  tls_active_ = true;
  session_ = Session{};
  meta_set_ = false;
  meta_export_.clear();
  co_return Next::kContinue;
}

}  // namespace strata::nbd
